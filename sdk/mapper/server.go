package mapper

import (
	"context"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// server is the mapper's DeviceMapperService: what edgecore's DMI calls.
type server struct {
	dmiv1beta1.UnimplementedDeviceMapperServiceServer
	m *Module
}

func (s *server) RegisterDevice(_ context.Context, req *dmiv1beta1.RegisterDeviceRequest) (*dmiv1beta1.RegisterDeviceResponse, error) {
	d := req.GetDevice()
	if err := s.m.putDevice(d); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "RegisterDevice: %v", err)
	}
	return &dmiv1beta1.RegisterDeviceResponse{DeviceName: d.GetName(), DeviceNamespace: d.GetNamespace()}, nil
}

func (s *server) UpdateDevice(_ context.Context, req *dmiv1beta1.UpdateDeviceRequest) (*dmiv1beta1.UpdateDeviceResponse, error) {
	if err := s.m.putDevice(req.GetDevice()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "UpdateDevice: %v", err)
	}
	return &dmiv1beta1.UpdateDeviceResponse{}, nil
}

func (s *server) RemoveDevice(_ context.Context, req *dmiv1beta1.RemoveDeviceRequest) (*dmiv1beta1.RemoveDeviceResponse, error) {
	if req.GetDeviceName() == "" {
		return nil, status.Error(codes.InvalidArgument, "RemoveDevice: deviceName is empty")
	}
	s.m.removeDevice(req.GetDeviceNamespace(), req.GetDeviceName()) // removing an unknown device is done already
	return &dmiv1beta1.RemoveDeviceResponse{}, nil
}

func (s *server) CreateDeviceModel(_ context.Context, req *dmiv1beta1.CreateDeviceModelRequest) (*dmiv1beta1.CreateDeviceModelResponse, error) {
	dm := req.GetModel()
	if dm.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "CreateDeviceModel: model has no name")
	}
	s.m.putModel(dm)
	return &dmiv1beta1.CreateDeviceModelResponse{DeviceModelName: dm.GetName(), DeviceModelNamespace: dm.GetNamespace()}, nil
}

func (s *server) UpdateDeviceModel(_ context.Context, req *dmiv1beta1.UpdateDeviceModelRequest) (*dmiv1beta1.UpdateDeviceModelResponse, error) {
	dm := req.GetModel()
	if dm.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "UpdateDeviceModel: model has no name")
	}
	s.m.putModel(dm)
	return &dmiv1beta1.UpdateDeviceModelResponse{}, nil
}

func (s *server) RemoveDeviceModel(_ context.Context, req *dmiv1beta1.RemoveDeviceModelRequest) (*dmiv1beta1.RemoveDeviceModelResponse, error) {
	if req.GetModelName() == "" {
		return nil, status.Error(codes.InvalidArgument, "RemoveDeviceModel: modelName is empty")
	}
	s.m.removeModel(req.GetModelNamespace(), req.GetModelName())
	return &dmiv1beta1.RemoveDeviceModelResponse{}, nil
}

// GetDevice answers with the device as last given and its latest read values as reported twins.
func (s *server) GetDevice(_ context.Context, req *dmiv1beta1.GetDeviceRequest) (*dmiv1beta1.GetDeviceResponse, error) {
	k := req.GetDeviceNamespace() + "/" + req.GetDeviceName()
	s.m.mu.Lock()
	r := s.m.devices[k]
	s.m.mu.Unlock()
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "GetDevice: device %s is not served by this mapper", k)
	}
	snap := r.snapshot()
	out := proto.Clone(snap.device).(*dmiv1beta1.Device)
	out.Status = &dmiv1beta1.DeviceStatus{}
	for _, p := range snap.props {
		if !p.has {
			continue
		}
		out.Status.Twins = append(out.Status.Twins, &dmiv1beta1.Twin{PropertyName: p.name,
			Reported: &dmiv1beta1.TwinProperty{Value: p.value, Metadata: map[string]string{"timestamp": strconv.FormatInt(p.ts.UnixMilli(), 10), "type": p.typ}}})
	}
	return &dmiv1beta1.GetDeviceResponse{Device: out}, nil
}
