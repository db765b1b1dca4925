/* A Modbus RTU slave on libmodbus for the mbrtu tests: argv = device baud parity(N|E|O) slave-id.
 * Tables of 100 entries: holding register i = 1000*slave + i, input register i = i, coil i on when
 * i % 3 == 0, discrete input i on when i is odd; input registers 10-11 hold the float32 23.75 (ABCD).
 * Holding register 40 is a counter: it starts at 1 and goes up by one after every read that
 * includes it, so every read of it is a new number (the hot-swap tests check none is lost).
 * It opens the serial device, prints "READY <slave>" and answers requests for its slave id
 * (libmodbus ignores the others, as a slave on a shared RS-485 bus does) until killed. */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s device baud parity slave\n", argv[0]); return 2; }
    int slave = atoi(argv[4]);
    modbus_t *ctx = modbus_new_rtu(argv[1], atoi(argv[2]), argv[3][0], 8, 1);
    modbus_mapping_t *m = modbus_mapping_new(100, 100, 100, 100);
    if (!ctx || !m) { fprintf(stderr, "init: %s\n", modbus_strerror(errno)); return 1; }
    for (int i = 0; i < 100; i++) {
        m->tab_bits[i] = (i % 3 == 0);
        m->tab_input_bits[i] = (i % 2 == 1);
        m->tab_registers[i] = (uint16_t)(1000 * slave + i);
        m->tab_input_registers[i] = (uint16_t)i;
    }
    m->tab_registers[40] = 1;
    float f = 23.75f; uint32_t fb; memcpy(&fb, &f, 4);
    m->tab_input_registers[10] = fb >> 16; m->tab_input_registers[11] = fb & 0xffff;
    if (modbus_set_slave(ctx, slave) < 0 || modbus_connect(ctx) < 0) {
        fprintf(stderr, "open %s: %s\n", argv[1], modbus_strerror(errno)); return 1;
    }
    printf("READY %d\n", slave); fflush(stdout);
    uint8_t q[MODBUS_RTU_MAX_ADU_LENGTH];
    for (;;) {
        int n = modbus_receive(ctx, q);
        if (n > 0) {
            modbus_reply(ctx, q, n, m);
            int addr = q[2] << 8 | q[3], qty = q[4] << 8 | q[5];
            if (q[1] == 3 && addr <= 40 && 40 < addr + qty) m->tab_registers[40]++;
        }
        /* n == 0: a request for another slave; n < 0: a damaged frame (libmodbus flushed it) */
    }
}
