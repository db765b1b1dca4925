package mbtcp

import "fmt"

// ExceptionCode is the code a server sends in an exception response (function code | 0x80).
// It is an error itself, so errors.Is(err, mbtcp.IllegalDataAddress) tells an exception apart.
type ExceptionCode byte

// Exception codes of the Modbus Application Protocol (section 7).
const (
	IllegalFunction                    ExceptionCode = 0x01
	IllegalDataAddress                 ExceptionCode = 0x02
	IllegalDataValue                   ExceptionCode = 0x03
	ServerDeviceFailure                ExceptionCode = 0x04
	Acknowledge                        ExceptionCode = 0x05
	ServerDeviceBusy                   ExceptionCode = 0x06
	MemoryParityError                  ExceptionCode = 0x08
	GatewayPathUnavailable             ExceptionCode = 0x0A
	GatewayTargetDeviceFailedToRespond ExceptionCode = 0x0B
)

var exceptionNames = map[ExceptionCode]string{
	IllegalFunction:                    "illegal function",
	IllegalDataAddress:                 "illegal data address",
	IllegalDataValue:                   "illegal data value",
	ServerDeviceFailure:                "server device failure",
	Acknowledge:                        "acknowledge",
	ServerDeviceBusy:                   "server device busy",
	MemoryParityError:                  "memory parity error",
	GatewayPathUnavailable:             "gateway path unavailable",
	GatewayTargetDeviceFailedToRespond: "gateway target device failed to respond",
}

func (c ExceptionCode) String() string {
	if n, ok := exceptionNames[c]; ok {
		return n
	}
	return fmt.Sprintf("exception code 0x%02x", byte(c))
}

func (c ExceptionCode) Error() string { return "modbus exception: " + c.String() }

// ExceptionError is a server's exception response to a request: the request reached the device and
// the device refused it. The connection stays usable.
type ExceptionError struct {
	Function FunctionCode
	Code     ExceptionCode
}

func (e *ExceptionError) Error() string {
	return fmt.Sprintf("modbus exception for %s: %s (code %d)", e.Function, e.Code.String(), byte(e.Code))
}

// Unwrap lets errors.Is(err, mbtcp.IllegalDataAddress) match.
func (e *ExceptionError) Unwrap() error { return e.Code }
