package modbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk/sdktest"
)

const meterModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"meter","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"modbus","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly"},
  {"name":"energy","type":"INT","accessMode":"ReadOnly"},
  {"name":"setpoint","type":"INT","accessMode":"ReadWrite"}]}}`

// meterDevice is a KubeEdge-shaped Modbus RTU Device: the line in configData with KubeEdge's field
// names, visitors without dataType (types from the model).
func meterDevice(name, rv, port string, slave int, setpoint string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"meter"},"nodeName":%q,"protocol":{"protocolName":"modbus","configData":{"serialPort":%q,"baudRate":115200,"dataBits":8,"parity":"even","stopBits":1,"slaveID":%d,"timeout":"500ms"}},
  "properties":[
   {"name":"temperature","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"InputRegister","offset":10,"limit":2}}},
   {"name":"energy","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":7,"limit":1}}},
   {"name":"setpoint","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"modbus","configData":{"register":"HoldingRegister","offset":30,"limit":1}}}]}}`,
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
	// meter-1 keeps reporting while slave 2 times out on the same line: a value changed on slave 1
	// behind the mapper's back shows up in its twin.
	c, err := mbrtu.NewClient(mbrtu.Line{Port: bus.MasterPort, BaudRate: 115200}, mbrtu.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 30*time.Second, "writing slave 1's energy register", func() error {
		_, err := c.Do(context.Background(), 1, mbtcp.NewWriteSingleRegister(7, 1234))
		return err
	})
	r.waitTwin(t, "meter-1", "energy", "1234")
	r.waitState(t, "meter-1", "online")
}
