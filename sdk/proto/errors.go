package modulepb

import (
	"context"
	"errors"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	router "github.com/kedge-io/kedge/sdk"
	store "github.com/kedge-io/kedge/sdk/storeapi"
)

// errorDomain marks the ErrorInfo detail that carries which sentinel errors a host error wraps.
const errorDomain = "kedge.io"

type sentinel struct {
	name string
	err  error
	code codes.Code
}

// sentinels are the errors a module may test with errors.Is, by their wire name. Their order
// decides the gRPC code when an error wraps several.
var sentinels = []sentinel{
	{"NOT_FOUND", store.ErrNotFound, codes.NotFound},
	{"INVALID_KEY", store.ErrInvalidKey, codes.InvalidArgument},
	{"NO_WAITER", router.ErrNoWaiter, codes.FailedPrecondition},
	{"UNKNOWN_MODULE", router.ErrUnknownModule, codes.NotFound},
	{"MAILBOX_FULL", router.ErrMailboxFull, codes.ResourceExhausted},
	{"CLOSED", router.ErrClosed, codes.Unavailable},
	{"DUPLICATE", router.ErrDuplicate, codes.AlreadyExists},
	{"NO_ID", router.ErrNoID, codes.InvalidArgument},
	{"DEADLINE_EXCEEDED", context.DeadlineExceeded, codes.DeadlineExceeded},
	{"CANCELED", context.Canceled, codes.Canceled},
}

// Status turns an error of the host's services into a gRPC status error that keeps the message and
// names every sentinel it wraps, so Error can rebuild an error that errors.Is still recognises.
func Status(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	info := &errdetails.ErrorInfo{Domain: errorDomain, Metadata: map[string]string{}}
	var names []string
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			if len(names) == 0 {
				code, info.Reason = s.code, s.name
			}
			names = append(names, s.name)
		}
	}
	st := status.New(code, err.Error())
	if len(names) == 0 {
		return st.Err()
	}
	info.Metadata["is"] = strings.Join(names, ",")
	if withInfo, derr := st.WithDetails(info); derr == nil {
		st = withInfo
	}
	return st.Err()
}

// Error turns an error from a Host call back into one with the host's message that errors.Is matches
// against the sentinels the host's error wrapped (sdk.ErrNotFound, sdk.ErrUnknownModule, ...). An
// error that is not a gRPC status is returned as is.
func Error(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	re := &remoteError{msg: st.Message()}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, name := range strings.Split(info.GetMetadata()["is"], ",") {
			if i := slices.IndexFunc(sentinels, func(s sentinel) bool { return s.name == name }); i >= 0 {
				re.is = append(re.is, sentinels[i].err)
			}
		}
	}
	if len(re.is) == 0 {
		// No detail: an error of the host's own (code Unknown), or one gRPC raised itself.
		switch st.Code() {
		case codes.DeadlineExceeded:
			re.is = []error{context.DeadlineExceeded}
		case codes.Canceled:
			re.is = []error{context.Canceled}
		case codes.Unavailable:
			re.msg = "the host is unreachable: " + st.Message()
		}
	}
	return re
}

// remoteError is an error that happened in the host, as the plugin sees it.
type remoteError struct {
	msg string
	is  []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.is }
