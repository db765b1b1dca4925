package dmi

import (
	"bytes"
	"context"
	"encoding/json"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sdkmapper "github.com/kedge-io/kedge/sdk/mapper"
)

// maxPropertyErrors bounds the header (a mapper with many failing properties still fits).
const maxPropertyErrors = 64 << 10

// propertyErrors reads the failing properties a Kedge mapper sends with ReportDeviceStates in the
// request metadata (sdkmapper.PropertyErrorsHeader, a Kedge addition; KubeEdge's mappers send none and
// get nil). A header that is not a JSON object of {read, write} errors is refused, naming the header.
func propertyErrors(ctx context.Context, device string) (*map[string]sdkmapper.PropertyError, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(sdkmapper.PropertyErrorsHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	raw := []byte(vals[len(vals)-1])
	if len(raw) > maxPropertyErrors {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s is %d bytes, over %d", device, sdkmapper.PropertyErrorsHeader, len(raw), maxPropertyErrors)
	}
	errs := map[string]sdkmapper.PropertyError{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&errs); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s %q is not a JSON object of property -> {\"read\", \"write\"}: %v", device, sdkmapper.PropertyErrorsHeader, clipText(raw), err)
	}
	for p := range errs {
		if p == "" {
			return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s names an empty property", device, sdkmapper.PropertyErrorsHeader)
		}
	}
	return &errs, nil
}

func clipText(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// offlineReason reads why the mapper says the device is offline (sdkmapper.OfflineReasonHeader, a
// Kedge addition): nil when the mapper sent none (KubeEdge's mappers), an empty reason when it gave
// none. A header that is not {"reason", "message"} with a CamelCase reason is refused, naming it.
func offlineReason(ctx context.Context, device string) (*sdkmapper.OfflineReason, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(sdkmapper.OfflineReasonHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	raw := []byte(vals[len(vals)-1])
	if len(raw) > maxPropertyErrors {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s is %d bytes, over %d", device, sdkmapper.OfflineReasonHeader, len(raw), maxPropertyErrors)
	}
	var r sdkmapper.OfflineReason
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s %q is not a JSON object {\"reason\", \"message\"}: %v", device, sdkmapper.OfflineReasonHeader, clipText(raw), err)
	}
	if r.Reason != "" && !sdkmapper.ValidReason(r.Reason) {
		return nil, status.Errorf(codes.InvalidArgument, "ReportDeviceStates: device %q: metadata %s: reason %q is not a CamelCase word", device, sdkmapper.OfflineReasonHeader, r.Reason)
	}
	return &r, nil
}
