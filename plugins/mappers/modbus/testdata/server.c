/* A Modbus TCP server on libmodbus for the mbtcp tests: 100 coils, discrete inputs, holding and
 * input registers, pre-filled with known values (see the table in mbtcp's server_test.go). It
 * listens on 127.0.0.1:<argv[1]> (0 = any free port), prints "LISTENING <port>" and serves any
 * number of clients with select() until killed. */
#include <arpa/inet.h>
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static uint16_t swab16(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }

/* Stores v in two registers: ABCD, or with the bytes of each register swapped (BADC), or with the
 * registers swapped (CDAB), or both (DCBA). */
static void put32(uint16_t *r, uint32_t v, int swap_byte, int swap_word) {
    uint16_t hi = v >> 16, lo = v & 0xffff;
    if (swap_byte) { hi = swab16(hi); lo = swab16(lo); }
    if (swap_word) { r[0] = lo; r[1] = hi; } else { r[0] = hi; r[1] = lo; }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 1502;
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *m = modbus_mapping_new(100, 100, 100, 100);
    if (!ctx || !m) { fprintf(stderr, "init: %s\n", modbus_strerror(errno)); return 1; }
    for (int i = 0; i < 100; i++) {
        m->tab_bits[i] = (i % 3 == 0);          /* coils: 1 0 0 1 0 0 ... */
        m->tab_input_bits[i] = (i % 2 == 1);    /* discrete inputs: 0 1 0 1 ... */
        m->tab_registers[i] = (uint16_t)(1000 + i);
        m->tab_input_registers[i] = (uint16_t)i;
    }
    /* Typed values in the input registers, laid out by hand (A = most significant byte):
     * 0 int16 -1234 | 1 uint16 54321 | 2-3 int32 -123456789 ABCD | 4-5 uint32 3000000000 ABCD
     * 10/12/14/16 float32 3.14159 in ABCD/CDAB/BADC/DCBA | 20 int16 -1234 as BA
     * 22/24/26 int32 -123456789 in CDAB/BADC/DCBA */
    uint16_t *ir = m->tab_input_registers;
    float f = 3.14159f; uint32_t fb; memcpy(&fb, &f, 4);
    uint32_t i32 = (uint32_t)(int32_t)-123456789;
    ir[0] = (uint16_t)(int16_t)-1234;
    ir[1] = 54321;
    put32(ir + 2, i32, 0, 0);
    put32(ir + 4, 3000000000u, 0, 0);
    put32(ir + 10, fb, 0, 0); put32(ir + 12, fb, 0, 1); put32(ir + 14, fb, 1, 0); put32(ir + 16, fb, 1, 1);
    ir[20] = swab16((uint16_t)(int16_t)-1234);
    put32(ir + 22, i32, 0, 1); put32(ir + 24, i32, 1, 0); put32(ir + 26, i32, 1, 1);

    int srv = modbus_tcp_listen(ctx, 16);
    if (srv < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    struct sockaddr_in sa; socklen_t sl = sizeof sa;
    getsockname(srv, (struct sockaddr *)&sa, &sl);
    printf("LISTENING %d\n", ntohs(sa.sin_port)); fflush(stdout);

    fd_set all; FD_ZERO(&all); FD_SET(srv, &all); int maxfd = srv;
    uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        fd_set rd = all;
        if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0) { if (errno == EINTR) continue; return 1; }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &rd)) continue;
            if (fd == srv) {
                int c = accept(srv, NULL, NULL);
                if (c >= 0) { FD_SET(c, &all); if (c > maxfd) maxfd = c; }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int n = modbus_receive(ctx, q);
            if (n > 0) modbus_reply(ctx, q, n, m);
            else if (n < 0) { close(fd); FD_CLR(fd, &all); }
        }
    }
}
