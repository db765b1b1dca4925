package modbus_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/sdk/message"
)

const meterModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"meter","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"modbus","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly"},
  {"name":"energy","type":"INT","accessMode":"ReadOnly"},
  {"name":"setpoint","type":"INT","accessMode":"ReadWrite"},
  {"name":"count","type":"INT","accessMode":"ReadOnly"}]}}`

// meterDevice is a KubeEdge-shaped Modbus RTU Device: the line in configData with KubeEdge's field
// names, visitors without dataType (types from the model).
func meterDevice(name, rv, port string, slave int, setpoint string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"meter"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"serialPort":%q,"baudRate":115200,"dataBits":8,"parity":"even","stopBits":1,"slaveID":%d,"timeout":"500ms"}},
  "properties":[
   {"name":"temperature","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"InputRegister","offset":10,"limit":2}}},
   {"name":"energy","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":7,"limit":1}}},
   {"name":"setpoint","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":30,"limit":1}}},
   {"name":"count","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":40,"limit":1}}}]}}`,
		name, rv, sdktest.NodeName, port, slave, setpoint)
}

// Two Modbus RTU meters on one serial line, through the mapper runtime with edgecore's real dmi,
// devicetwin and metamanager: both report their own slave's values, a desired value is written to
// the right slave, and when one slave goes silent it turns offline while the other keeps reporting.
func TestRTUMetersOnOneLineReportWriteAndFailIndependentlyThroughTheMapperRuntime(t *testing.T) {
	r := newRig(t)
	bus := mbserver.StartBus(t, 115200, "E", 1, 2)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/meter", "1", meterModel)
	r.fromCloud(t, message.OpInsert, "default/device/meter-1", "2", meterDevice("meter-1", "2", bus.MasterPort, 1, "41"))
	r.fromCloud(t, message.OpInsert, "default/device/meter-2", "3", meterDevice("meter-2", "3", bus.MasterPort, 2, "42"))
	for _, m := range []struct{ name, energy, setpoint string }{{"meter-1", "1007", "41"}, {"meter-2", "2007", "42"}} {
		r.waitState(t, m.name, "online")
		r.waitTwin(t, m.name, "temperature", "23.75")
		r.waitTwin(t, m.name, "energy", m.energy)
		r.waitTwin(t, m.name, "setpoint", m.setpoint)
	}
	// A new desired value for meter-2 lands in slave 2's register only.
	r.fromCloud(t, message.OpUpdate, "default/device/meter-2", "4", meterDevice("meter-2", "4", bus.MasterPort, 2, "77"))
	r.waitTwin(t, "meter-2", "setpoint", "77")
	r.waitTwin(t, "meter-1", "setpoint", "41")

	bus.Silence(2)
	r.waitState(t, "meter-2", "offline")
	// meter-1 keeps reporting while slave 2 times out on the same line: its counter (holding register
	// 40, up by one with every read) keeps moving in its twin.
	first, err := r.twin("meter-1", "count")
	if err != nil {
		t.Fatal(err)
	}
	n0, _ := strconv.Atoi(first)
	waitFor(t, time.Minute, "meter-1's counter moving while slave 2 is silent", func() error {
		v, err := r.twin("meter-1", "count")
		if err != nil {
			return err
		}
		if n, _ := strconv.Atoi(v); n < n0+3 {
			return fmt.Errorf("count %s (was %d)", v, n0)
		}
		return nil
	})
	r.waitState(t, "meter-1", "online")
}
