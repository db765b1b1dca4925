package v1beta1

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// kubeedgeDescriptor is KubeEdge v1.23.1's DMI v1beta1 FileDescriptorProto, extracted from the
// upstream virtual-mapper binary (see testdata/README.md).
const kubeedgeDescriptor = "testdata/kubeedge-v1.23.1-dmi-v1beta1.desc"

// wireShape lists everything of a proto file that decides its wire format and its gRPC routes: every
// message (nested ones by their full name), every field with its number, label, type, message type
// and JSON name, every enum value, every service method with its request and answer types. Sorted,
// so declaration order does not count.
func wireShape(fd *descriptorpb.FileDescriptorProto) []string {
	var out []string
	var enums func(prefix string, es []*descriptorpb.EnumDescriptorProto)
	enums = func(prefix string, es []*descriptorpb.EnumDescriptorProto) {
		for _, e := range es {
			out = append(out, "enum "+prefix+e.GetName())
			for _, v := range e.Value {
				out = append(out, fmt.Sprintf("enum %s%s value %s = %d", prefix, e.GetName(), v.GetName(), v.GetNumber()))
			}
		}
	}
	var messages func(prefix string, ms []*descriptorpb.DescriptorProto)
	messages = func(prefix string, ms []*descriptorpb.DescriptorProto) {
		for _, m := range ms {
			name := prefix + m.GetName()
			out = append(out, "message "+name)
			for _, f := range m.Field {
				out = append(out, fmt.Sprintf("message %s field %s = %d %s %s %s json=%s oneof=%v proto3optional=%v",
					name, f.GetName(), f.GetNumber(), f.GetLabel(), f.GetType(), f.GetTypeName(), f.GetJsonName(),
					f.OneofIndex != nil, f.GetProto3Optional()))
			}
			for _, o := range m.OneofDecl {
				out = append(out, fmt.Sprintf("message %s oneof %s", name, o.GetName()))
			}
			messages(name+".", m.NestedType)
			enums(name+".", m.EnumType)
		}
	}
	out = append(out, "package "+fd.GetPackage(), "syntax "+fd.GetSyntax())
	for _, d := range fd.Dependency {
		out = append(out, "import "+d)
	}
	messages("", fd.MessageType)
	enums("", fd.EnumType)
	for _, s := range fd.Service {
		for _, m := range s.Method {
			out = append(out, fmt.Sprintf("service %s rpc %s(%s) returns (%s) clientStreaming=%v serverStreaming=%v",
				s.GetName(), m.GetName(), m.GetInputType(), m.GetOutputType(), m.GetClientStreaming(), m.GetServerStreaming()))
		}
	}
	sort.Strings(out)
	return out
}

func TestDMIProtoMatchesKubeEdgeV1231MessageByMessageFieldByField(t *testing.T) {
	raw, err := os.ReadFile(kubeedgeDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	var upstream descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(raw, &upstream); err != nil {
		t.Fatalf("%s: %v", kubeedgeDescriptor, err)
	}
	want := wireShape(&upstream)
	got := wireShape(protodesc.ToFileDescriptorProto(File_v1beta1_api_proto))
	if len(want) < 100 {
		t.Fatalf("KubeEdge's descriptor lists only %d items; the testdata is not the DMI proto", len(want))
	}
	wantSet, gotSet := map[string]bool{}, map[string]bool{}
	for _, w := range want {
		wantSet[w] = true
	}
	for _, g := range got {
		gotSet[g] = true
	}
	for _, w := range want {
		if !gotSet[w] {
			t.Errorf("KubeEdge has, Kedge lacks:  %s", w)
		}
	}
	for _, g := range got {
		if !wantSet[g] {
			t.Errorf("Kedge has, KubeEdge lacks:  %s", g)
		}
	}
}

// TestKubeEdgeDescriptorTestdataIsTheVirtualMappers proves the committed descriptor is the one the
// upstream mapper binary carries, byte for byte, when that binary is on this machine.
func TestKubeEdgeDescriptorTestdataIsTheVirtualMappers(t *testing.T) {
	bin := filepath.Join(kubeedgeDir(t), "mappers", "virtual-mapper")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Skipf("upstream KubeEdge virtual-mapper not found (%v): set KEDGE_KUBEEDGE_DIR to the folder holding mappers/virtual-mapper", err)
	}
	extracted, err := extractFileDescriptor(data, "api.proto", "v1beta1")
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	committed, err := os.ReadFile(kubeedgeDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(extracted, committed) {
		t.Fatalf("%s differs from the descriptor in %s (%d vs %d bytes): re-extract it (testdata/README.md)", kubeedgeDescriptor, bin, len(committed), len(extracted))
	}
}

// extractFileDescriptor finds the serialized FileDescriptorProto that protoc-gen-go embeds in a Go
// binary (it starts with field 1, the file name, then field 2, the package) and returns its bytes:
// fields are consumed while they are valid FileDescriptorProto fields, up to and including field 12
// (syntax), which protoc-gen-go writes last.
func extractFileDescriptor(bin []byte, name, pkg string) ([]byte, error) {
	var head []byte
	head = protowire.AppendTag(head, 1, protowire.BytesType)
	head = protowire.AppendString(head, name)
	head = protowire.AppendTag(head, 2, protowire.BytesType)
	head = protowire.AppendString(head, pkg)
	i := bytes.Index(bin, head)
	if i < 0 {
		return nil, fmt.Errorf("no embedded descriptor for %s (package %s)", name, pkg)
	}
	b := bin[i:]
	n := 0
	for n < len(b) {
		num, typ, l := protowire.ConsumeTag(b[n:])
		if l < 0 || num < 1 || num > 14 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n+l:])
		if m < 0 {
			break
		}
		n += l + m
		if num == 12 {
			break
		}
	}
	var fd descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(b[:n], &fd); err != nil {
		return nil, fmt.Errorf("embedded descriptor for %s does not parse: %w", name, err)
	}
	if len(fd.MessageType) == 0 {
		return nil, fmt.Errorf("embedded descriptor for %s has no messages", name)
	}
	return b[:n], nil
}

// kubeedgeDir is KEDGE_KUBEEDGE_DIR, or the first shared/kubeedge found beside this folder or one of
// its parents (the project's ../shared/kubeedge, also from a worktree).
func kubeedgeDir(t *testing.T) string {
	if d := os.Getenv("KEDGE_KUBEEDGE_DIR"); d != "" {
		return d
	}
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		cand := filepath.Join(dir, "shared", "kubeedge")
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join("..", "shared", "kubeedge")
		}
		dir = parent
	}
}

func TestWireShapeSeesANumberSwap(t *testing.T) {
	// The comparison above must fail on the bug it guards against: otel and dbMethod swapped.
	fd := protodesc.ToFileDescriptorProto(File_v1beta1_api_proto)
	before := strings.Join(wireShape(fd), "\n")
	for _, m := range fd.MessageType {
		if m.GetName() == "PushMethod" {
			for _, f := range m.Field {
				switch f.GetName() {
				case "otel":
					f.Number = proto.Int32(3)
				case "dbMethod":
					f.Number = proto.Int32(4)
				}
			}
		}
	}
	if strings.Join(wireShape(fd), "\n") == before {
		t.Fatal("swapping PushMethod.otel and dbMethod numbers did not change the wire shape")
	}
}
