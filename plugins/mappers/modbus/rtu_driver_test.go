package modbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/sdk/mapper"
)

func initRTU(t *testing.T, name, cfg string) (mapper.Driver, mapper.DeviceRef, error) {
	t.Helper()
	ref := mapper.DeviceRef{Namespace: "default", Name: name, Model: "meter"}
	d := modbus.NewDriver()
	err := d.Init(context.Background(), mapper.ProtocolConfig{Device: ref, Name: "modbus", ConfigData: json.RawMessage(cfg)})
	if err == nil {
		t.Cleanup(func() { d.Close() })
	}
	return d, ref, err
}

// Two meters on one RS-485 line (two slave ids, KubeEdge's configData fields): each reads and writes
// its own registers through one shared serial client; a device that names the same line with other
// settings is refused naming them; the line's counters reach Prometheus.
func TestRTUDevicesSharingOneSerialLineReadAndWriteTheirOwnSlave(t *testing.T) {
	bus := mbserver.StartBus(t, 115200, "E", 1, 2)
	line := fmt.Sprintf(`"serialPort":%q,"baudRate":115200,"dataBits":8,"parity":"even","stopBits":1,"timeout":"5s"`, bus.MasterPort)
	d1, ref1, err := initRTU(t, "meter-1", `{`+line+`,"slaveID":1}`)
	if err != nil {
		t.Fatal(err)
	}
	d2, ref2, err := initRTU(t, "meter-2", `{`+line+`,"slaveID":2}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, d := range []struct {
		d    mapper.Driver
		ref  mapper.DeviceRef
		want string
	}{{d1, ref1, "1007"}, {d2, ref2, "2007"}} {
		if err := d.d.Health(ctx, d.ref); err != nil {
			t.Fatalf("%s health: %v", d.ref.Name, err)
		}
		v, err := d.d.Read(ctx, d.ref, prop("energy", "INT", `{"register":"HoldingRegister","offset":7,"limit":1}`))
		if s, _ := mapper.FormatValue("INT", v); err != nil || s != d.want {
			t.Fatalf("%s holding 7 = %v %v, want %s", d.ref.Name, v, err, d.want)
		}
	}
	// The model's FLOAT over two input registers, no dataType (KubeEdge-shaped visitor).
	v, err := d1.Read(ctx, ref1, prop("temperature", "FLOAT", `{"register":"InputRegister","offset":10,"limit":2}`))
	if s, _ := mapper.FormatValue("FLOAT", v); err != nil || s != "23.75" {
		t.Fatalf("meter-1 temperature = %v %v, want 23.75", v, err)
	}
	sp := prop("setpoint", "FLOAT", `{"register":"HoldingRegister","offset":20,"limit":2}`)
	if err := d2.Write(ctx, ref2, sp, 21.5); err != nil {
		t.Fatal(err)
	}
	if v, err := d2.Read(ctx, ref2, sp); err != nil || v != 21.5 {
		t.Fatalf("meter-2 setpoint after writing 21.5 = %v %v", v, err)
	}
	if v, err := d1.Read(ctx, ref1, prop("r", "INT", `{"register":"HoldingRegister","offset":20,"limit":1}`)); err != nil || fmt.Sprint(v) != "1020" {
		t.Fatalf("meter-1 holding 20 = %v %v, want 1020 untouched", v, err)
	}

	_, _, err = initRTU(t, "meter-3", fmt.Sprintf(`{"serialPort":%q,"baudRate":9600,"slaveID":3}`, bus.MasterPort))
	if err == nil || !strings.Contains(err.Error(), "already in use at 115200 baud") || !strings.Contains(err.Error(), "meter-3") {
		t.Fatalf("a device naming the line at 9600 baud: %v, want a refusal naming the line's settings", err)
	}

	// The line's counters, as the module registers them.
	bus.FlipResponses(1)
	if v, err := d1.Read(ctx, ref1, prop("energy", "INT", `{"register":"HoldingRegister","offset":7,"limit":1}`)); err != nil || fmt.Sprint(v) != "1007" {
		t.Fatalf("read through one damaged answer = %v %v", v, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(modbus.LineMetrics())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf(`kedge_modbus_rtu_retries_total{port=%q} 1`, bus.MasterPort)
	if !strings.Contains(string(body), want) || !strings.Contains(string(body), "kedge_modbus_rtu_crc_errors_total") {
		t.Fatalf("metrics lack %s:\n%s", want, body)
	}
}
