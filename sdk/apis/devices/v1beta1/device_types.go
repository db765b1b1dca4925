package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Device is one physical or virtual device bound to an edge node: how to reach it (protocol), the
// properties it has with their desired values and how they are read and reported, and, in its
// status, what the edge reported.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=dev
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.deviceModelRef.name`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Healthy",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Healthy")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Device struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:validation:Required
	Spec DeviceSpec `json:"spec"`
	// Status is what the edge reported (twins, state, lastOnlineTime). KubeEdge v1.23 moved these to a
	// separate DeviceStatus object of the same name, which Kedge keeps too (see sdk/apis/README.md).
	// Unknown fields are kept, as KubeEdge's CRD keeps them.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	Status DeviceInstanceStatus `json:"status,omitempty"`
}

// DeviceList is a list of Devices.
//
// +kubebuilder:object:root=true
type DeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Device `json:"items"`
}

// DeviceSpec is what the user wants of a device.
type DeviceSpec struct {
	// DeviceModelRef names the DeviceModel (in the device's namespace) this device is an instance of.
	// +kubebuilder:validation:Required
	DeviceModelRef *DeviceModelReference `json:"deviceModelRef"`
	// NodeName is the edge node the device is attached to; its mapper runs there.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// Properties are the device's properties: desired values, how to read them, how to report them.
	// +optional
	// +listType=map
	// +listMapKey=name
	Properties []DeviceProperty `json:"properties,omitempty"`
	// Protocol says how the mapper reaches the device.
	// +optional
	Protocol ProtocolConfig `json:"protocol,omitempty"`
	// Methods group properties that can be written together.
	// +optional
	Methods []DeviceMethod `json:"methods,omitempty"`
	// StateReport says whether and how often the mapper reports the device's state (online, offline,
	// ...); it reaches the mapper as the DMI DeviceStatus reportToCloud / reportCycle.
	// +optional
	StateReport *StateReport `json:"stateReport,omitempty"`
}

// StateReport is how the device's state is reported.
type StateReport struct {
	// ReportCycle is how often, in milliseconds, the mapper reports the device's state.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ReportCycle int64 `json:"reportCycle,omitempty"`
	// ReportToCloud says whether the mapper reports the device's state at all.
	// +optional
	ReportToCloud bool `json:"reportToCloud,omitempty"`
}

// DeviceModelReference names a DeviceModel in the same namespace.
type DeviceModelReference struct {
	// Name of the DeviceModel.
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// ProtocolConfig is the protocol a device speaks and its settings (connection address, serial port,
// slave id, ... — whatever that protocol's mapper understands).
type ProtocolConfig struct {
	// ProtocolName is the mapper's protocol, e.g. modbus, opcua, virtualProtocol.
	// +optional
	ProtocolName string `json:"protocolName,omitempty"`
	// ConfigData is free-form configuration for the protocol's mapper.
	// +optional
	ConfigData *CustomizedValue `json:"configData,omitempty"`
}

// DeviceProperty is one property of a device: its desired value, how the mapper reads it, how often
// it is collected and reported, and where else the values are pushed.
type DeviceProperty struct {
	// Name is the property's name, matching a property of the DeviceModel.
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Desired is the value the user wants the property to have (ReadWrite properties).
	// +optional
	Desired TwinProperty `json:"desired,omitempty"`
	// Visitors says how the mapper reads and writes the property over the device's protocol.
	// +optional
	Visitors VisitorConfig `json:"visitors,omitempty"`
	// ReportCycle is how often, in milliseconds, the mapper reports the property.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ReportCycle int64 `json:"reportCycle,omitempty"`
	// CollectCycle is how often, in milliseconds, the mapper reads the property from the device.
	// +optional
	// +kubebuilder:validation:Minimum=0
	CollectCycle int64 `json:"collectCycle,omitempty"`
	// ReportToCloud says whether the reported value goes into the Device status in the cloud.
	// +optional
	ReportToCloud bool `json:"reportToCloud,omitempty"`
	// PushMethod sends the property's values to another destination as well.
	// +optional
	PushMethod *PushMethod `json:"pushMethod,omitempty"`
}

// TwinProperty is a property's value as text, with its metadata (for reported values: timestamp in
// milliseconds since the epoch, as a decimal string, and type).
type TwinProperty struct {
	// Value of the property, as text.
	// +optional
	Value string `json:"value,omitempty"`
	// Metadata of the value, e.g. timestamp and type.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
}

// VisitorConfig says how the mapper reaches one property over the device's protocol.
type VisitorConfig struct {
	// ProtocolName of the visitor; the device's protocol.
	// +optional
	ProtocolName string `json:"protocolName,omitempty"`
	// ConfigData is free-form configuration (register, offset, node id, ...).
	// +optional
	ConfigData *CustomizedValue `json:"configData,omitempty"`
}

// PushMethod is where, besides the cloud, the mapper pushes a property's values.
type PushMethod struct {
	// +optional
	HTTP *PushMethodHTTP `json:"http,omitempty"`
	// +optional
	MQTT *PushMethodMQTT `json:"mqtt,omitempty"`
	// +optional
	OTEL *PushMethodOTEL `json:"otel,omitempty"`
	// DBMethod stores the values in a database.
	// +optional
	DBMethod *DBMethodConfig `json:"dbMethod,omitempty"`
	// AnomalyDetection is free-form configuration of an anomaly detection service the values go to.
	// +optional
	AnomalyDetection *CustomizedValue `json:"anomalyDetection,omitempty"`
}

// PushMethodHTTP posts values to an HTTP endpoint.
type PushMethodHTTP struct {
	// +optional
	HostName string `json:"hostName,omitempty"`
	// +optional
	Port int64 `json:"port,omitempty"`
	// +optional
	RequestPath string `json:"requestPath,omitempty"`
	// Timeout in milliseconds.
	// +optional
	Timeout int64 `json:"timeout,omitempty"`
}

// PushMethodMQTT publishes values to an MQTT broker.
type PushMethodMQTT struct {
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Topic string `json:"topic,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2
	QoS int32 `json:"qos,omitempty"`
	// +optional
	Retained bool `json:"retained,omitempty"`
}

// PushMethodOTEL exports values to an OpenTelemetry collector.
type PushMethodOTEL struct {
	// +optional
	EndpointURL string `json:"endpointURL,omitempty"`
}

// DBMethodConfig stores values in one of the supported databases.
type DBMethodConfig struct {
	// +optional
	Influxdb2 *DBMethodInfluxdb2 `json:"influxdb2,omitempty"`
	// +optional
	Redis *DBMethodRedis `json:"redis,omitempty"`
	// +optional
	TDEngine *DBMethodTDEngine `json:"TDEngine,omitempty"`
	// +optional
	MySQL *DBMethodMySQL `json:"mysql,omitempty"`
}

// DBMethodInfluxdb2 writes to InfluxDB 2.
type DBMethodInfluxdb2 struct {
	// +optional
	Influxdb2ClientConfig *Influxdb2ClientConfig `json:"influxdb2ClientConfig,omitempty"`
	// +optional
	Influxdb2DataConfig *Influxdb2DataConfig `json:"influxdb2DataConfig,omitempty"`
}

// Influxdb2ClientConfig is where InfluxDB 2 is.
type Influxdb2ClientConfig struct {
	// +optional
	URL string `json:"url,omitempty"`
	// +optional
	Org string `json:"org,omitempty"`
	// +optional
	Bucket string `json:"bucket,omitempty"`
}

// Influxdb2DataConfig is how a value is written to InfluxDB 2.
type Influxdb2DataConfig struct {
	// +optional
	Measurement string `json:"measurement,omitempty"`
	// +optional
	Tag map[string]string `json:"tag,omitempty"`
	// +optional
	FieldKey string `json:"fieldKey,omitempty"`
}

// DBMethodRedis writes to Redis.
type DBMethodRedis struct {
	// +optional
	RedisClientConfig *RedisClientConfig `json:"redisClientConfig,omitempty"`
}

// RedisClientConfig is where Redis is.
type RedisClientConfig struct {
	// +optional
	Addr string `json:"addr,omitempty"`
	// +optional
	DB int `json:"db,omitempty"`
	// +optional
	Poolsize int `json:"poolsize,omitempty"`
	// +optional
	MinIdleConns int `json:"minIdleConns,omitempty"`
}

// DBMethodTDEngine writes to TDengine.
type DBMethodTDEngine struct {
	// +optional
	TDEngineClientConfig *TDEngineClientConfig `json:"TDEngineClientConfig,omitempty"`
}

// TDEngineClientConfig is where TDengine is.
type TDEngineClientConfig struct {
	// +optional
	Addr string `json:"addr,omitempty"`
	// +optional
	DBName string `json:"dbName,omitempty"`
}

// DBMethodMySQL writes to MySQL.
type DBMethodMySQL struct {
	// +optional
	MySQLClientConfig *MySQLClientConfig `json:"mysqlClientConfig,omitempty"`
}

// MySQLClientConfig is where MySQL is.
type MySQLClientConfig struct {
	// +optional
	Addr string `json:"addr,omitempty"`
	// +optional
	Database string `json:"database,omitempty"`
	// +optional
	UserName string `json:"userName,omitempty"`
}

// DeviceMethod names a set of properties that can be written together.
type DeviceMethod struct {
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	Description string `json:"description,omitempty"`
	// PropertyNames are the properties the method writes.
	// +optional
	PropertyNames []string `json:"propertyNames,omitempty"`
}

// DeviceInstanceStatus is what the edge reported about a device, kept in Device.status (KubeEdge's
// DeviceStatusOld) as well as in the DeviceStatus object of the same name.
type DeviceInstanceStatus struct {
	// Twins are the properties' reported values and the desired values the device last saw.
	// +optional
	// +listType=map
	// +listMapKey=propertyName
	Twins []Twin `json:"twins,omitempty"`
	// State of the device as its mapper sees it: online, offline, unknown, ...
	// +optional
	State string `json:"state,omitempty"`
	// LastOnlineTime is when the device was last online, as KubeEdge v1.23.1's edgecore writes it:
	// RFC 3339 in UTC ("2026-12-06T05:46:13Z"); "2006-01-02 15:04:05" is accepted too.
	// +optional
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
	// ReportToCloud says whether the device's state is reported to the cloud.
	// +optional
	ReportToCloud bool `json:"reportToCloud,omitempty"`
	// ReportCycle is how often, in milliseconds, the device's state is reported.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ReportCycle int64 `json:"reportCycle,omitempty"`
	// Conditions (a Kedge addition; KubeEdge v1.23.1 has none): type Healthy is False with a reason
	// and message while edgecore refuses the device's readings (out of the model's range, not of its
	// type) or its mapper reports it offline, and True again once readings are accepted and it is
	// online. Set by cloudcore's devicecontroller from what the edge's devicetwin reports.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionHealthy is the Device status condition saying whether the device's readings arrive.
const ConditionHealthy = "Healthy"

// Reasons of the Healthy condition.
const (
	ReasonReadingRefused = "ReadingRefused" // edgecore refused readings (range, type)
	ReasonDeviceOffline  = "DeviceOffline"  // the mapper reports the device offline (unreachable, every read fails)
	ReasonReadingsOK     = "ReadingsAccepted"
	ReasonWriteRefused   = "WriteRefused" // a desired value is not on the device: refused (edgecore: type, range; mapper: ReadOnly...) or its write fails
	ReasonReadFailed     = "ReadFailed"   // the mapper cannot read some properties; the device is online
)

// Twin is one property's reported value and the desired value the device last observed.
type Twin struct {
	// PropertyName names the property (spec.properties[].name).
	// +kubebuilder:validation:Required
	// +kubebuilder:validation:MinLength=1
	PropertyName string `json:"propertyName"`
	// Reported is the value the device reported, with metadata timestamp and type.
	// +optional
	Reported TwinProperty `json:"reported,omitempty"`
	// ObservedDesired is the desired value the device last saw.
	// +optional
	ObservedDesired TwinProperty `json:"observedDesired,omitempty"`
}
