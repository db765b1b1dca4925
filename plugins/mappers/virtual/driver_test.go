package virtual_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/plugins/mappers/virtual"
	"github.com/kedge-io/kedge/sdk/mapper"
)

var dev = mapper.DeviceRef{Namespace: "default", Name: "sim-1", Model: "sim"}

func initDriver(t *testing.T, cfg string) mapper.Driver {
	t.Helper()
	d := virtual.NewDriver()
	if err := d.Init(context.Background(), mapper.ProtocolConfig{Device: dev, Name: "virtual", ConfigData: json.RawMessage(cfg)}); err != nil {
		t.Fatal(err)
	}
	return d
}

func readN(t *testing.T, d mapper.Driver, p mapper.Property, n int) []mapper.Value {
	t.Helper()
	var out []mapper.Value
	for i := 0; i < n; i++ {
		v, err := d.Read(context.Background(), dev, p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

var temp = mapper.Property{Name: "temperature", Type: "FLOAT", AccessMode: "ReadOnly", Minimum: "19", Maximum: "21", Visitor: json.RawMessage(`{"start":20,"step":0.5}`)}

func TestSameSeedGivesTheSameWalkWithinTheModelBounds(t *testing.T) {
	a := readN(t, initDriver(t, `{"seed":7}`), temp, 200)
	b := readN(t, initDriver(t, `{"seed":7}`), temp, 200)
	c := readN(t, initDriver(t, `{"seed":8}`), temp, 200)
	moved, differs := false, false
	for i := range a {
		f := a[i].(float64)
		if f < 19 || f > 21 {
			t.Fatalf("reading %d = %v, outside [19, 21]", i, f)
		}
		if a[i] != b[i] {
			t.Fatalf("reading %d: %v and %v with the same seed", i, a[i], b[i])
		}
		moved = moved || f != 20
		differs = differs || a[i] != c[i]
	}
	if !moved || !differs {
		t.Fatalf("walk moved %v, another seed differs %v", moved, differs)
	}
}

func TestWritablePropertiesReadBackWhatWasWritten(t *testing.T) {
	d := initDriver(t, `{}`)
	for _, tc := range []struct {
		prop  mapper.Property
		write mapper.Value
		err   string
	}{
		{mapper.Property{Name: "target", Type: "INT", AccessMode: "ReadWrite", Minimum: "0", Maximum: "100"}, int64(42), ""},
		{mapper.Property{Name: "target", Type: "INT", AccessMode: "ReadWrite", Minimum: "0", Maximum: "100"}, int64(101), "outside [0, 100]"},
		{mapper.Property{Name: "mode", Type: "STRING", AccessMode: "ReadWrite", Visitor: json.RawMessage(`{"start":"auto"}`)}, "eco", ""},
		{mapper.Property{Name: "on", Type: "BOOLEAN", AccessMode: "ReadWrite"}, true, ""},
		{temp, 20.0, "read-only"},
	} {
		err := d.Write(context.Background(), dev, tc.prop, tc.write)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("write %s=%v: err %v, want %q", tc.prop.Name, tc.write, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("write %s: %v", tc.prop.Name, err)
		}
		if got := readN(t, d, tc.prop, 3); got[2] != tc.write {
			t.Errorf("%s read back %v, want %v", tc.prop.Name, got[2], tc.write)
		}
	}
	if errors.Is(d.Write(context.Background(), dev, temp, 1.0), mapper.ErrReadOnly) != true {
		t.Error("write to a ReadOnly property is not ErrReadOnly")
	}
}

func TestBadConfigAndOfflineDevicesGiveErrorsNamingTheProblem(t *testing.T) {
	d := virtual.NewDriver()
	if err := d.Init(context.Background(), mapper.ProtocolConfig{Device: dev, ConfigData: json.RawMessage(`{"sead":1}`)}); err == nil || !strings.Contains(err.Error(), "sead") {
		t.Errorf("unknown protocol key: %v", err)
	}
	ok := initDriver(t, `{}`)
	bad := temp
	bad.Visitor = json.RawMessage(`{"start":"hot"}`)
	if _, err := ok.Read(context.Background(), dev, bad); err == nil || !strings.Contains(err.Error(), "start") {
		t.Errorf("non-numeric start: %v", err)
	}
	off := initDriver(t, `{"offline":true}`)
	if _, err := off.Read(context.Background(), dev, temp); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Errorf("offline read: %v", err)
	}
	if err := off.Health(context.Background(), dev); err == nil {
		t.Error("offline device is healthy")
	}
}
