package mapper

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// OfflineReasonHeader is the gRPC request metadata key under which the runtime sends, with every
// ReportDeviceStates call, why the device is offline as a JSON object {"reason", "message"} ("{}"
// when it is online or the driver gave no reason). Like PropertyErrorsHeader it is a Kedge addition
// that leaves the DMI messages exactly KubeEdge's: Kedge's dmi hands it to devicetwin, whose Healthy
// condition then carries the driver's reason (e.g. AuthenticationFailed) and message instead of the
// generic DeviceOffline, so `kubectl get devices` says why.
const OfflineReasonHeader = "kedge-offline-reason"

// OfflineReason is the content of OfflineReasonHeader.
type OfflineReason struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// reasonWord is what a reason must look like: a CamelCase word, as Kubernetes condition reasons are.
var reasonWord = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,63}$`)

// ValidReason says whether r can be a condition reason (a CamelCase word of at most 64 characters).
func ValidReason(r string) bool { return reasonWord.MatchString(r) }

// ReasonError is a driver error with the reason the device's Healthy condition should show when it
// makes the device offline (from Init, Health, or every property's Read failing). Make one with
// WithReason; errors.As finds it through wrapping.
type ReasonError struct {
	Reason string
	Err    error
}

func (e *ReasonError) Error() string { return e.Err.Error() }
func (e *ReasonError) Unwrap() error { return e.Err }

// WithReason marks err with reason (a CamelCase word such as AuthenticationFailed or
// CredentialsMissing). A reason that is not such a word panics: it is a programming error.
func WithReason(reason string, err error) error {
	if !ValidReason(reason) {
		panic(fmt.Sprintf("mapper.WithReason: %q is not a CamelCase word", reason))
	}
	if err == nil {
		return nil
	}
	return &ReasonError{Reason: reason, Err: err}
}

// offlineReason is the header's content for a device in state with error why.
func offlineReason(state string, why error) string {
	var re *ReasonError
	if state != "offline" || why == nil || !errors.As(why, &re) {
		return "{}"
	}
	b, _ := json.Marshal(OfflineReason{Reason: re.Reason, Message: clip(why.Error())})
	return string(b)
}
