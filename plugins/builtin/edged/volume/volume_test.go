package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// objects is a Source backed by a map, as Edged's metamanager-backed one would be.
type objects struct {
	mu   sync.Mutex
	objs map[string][]byte
	gets int
}

func newObjects() *objects { return &objects{objs: map[string][]byte{}} }

func (o *objects) Get(_ context.Context, typ, ns, name string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gets++
	b, ok := o.objs[ns+"/"+typ+"/"+name]
	if !ok {
		return nil, fmt.Errorf("query %s/%s/%s: %w", ns, typ, name, ErrNotFound)
	}
	return b, nil
}

func (o *objects) put(t *testing.T, typ, ns, name string, obj any) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	o.objs[ns+"/"+typ+"/"+name] = b
	o.mu.Unlock()
}

func (o *objects) configMap(t *testing.T, name string, data map[string]string) {
	o.put(t, TypeConfigMap, "default", name, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: data})
}

func (o *objects) secret(t *testing.T, name string, data map[string]string) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	o.put(t, TypeSecret, "default", name, s)
}

func testPod(vols ...corev1.Volume) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("uid-1"),
			Labels: map[string]string{"app": "web", "tier": "front"}, Annotations: map[string]string{"note": "a \"quoted\" value"}},
		Spec: corev1.PodSpec{Volumes: vols, NodeName: "edge-1"},
	}
}

func ptr[T any](v T) *T { return &v }

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func perm(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestSetupWritesEachContentVolumeType(t *testing.T) {
	src := newObjects()
	src.configMap(t, "cfg", map[string]string{"a.conf": "A", "b.conf": "B"})
	src.secret(t, "creds", map[string]string{"user": "admin", "pass": "s3cret"})
	src.put(t, TypeServiceAccountToken, "default", "web", map[string]any{"podUID": "uid-1", "tokens": []map[string]any{{"expirationSeconds": 3600, "token": "tok-123", "audience": "api"}}})

	tests := []struct {
		name  string
		vol   corev1.VolumeSource
		files map[string]string      // relative path -> content
		modes map[string]os.FileMode // relative path -> mode
	}{
		{"configMap with every key as a file, mode 0644", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			map[string]string{"a.conf": "A", "b.conf": "B"}, map[string]os.FileMode{"a.conf": 0o644}},
		{"configMap items choose keys, paths and modes", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr[int32](0o600),
			Items: []corev1.KeyToPath{{Key: "a.conf", Path: "etc/app/a"}, {Key: "b.conf", Path: "b", Mode: ptr[int32](0o440)}}}},
			map[string]string{"etc/app/a": "A", "b": "B"}, map[string]os.FileMode{"etc/app/a": 0o600, "b": 0o440}},
		{"secret files default to 0644", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}},
			map[string]string{"user": "admin", "pass": "s3cret"}, map[string]os.FileMode{"user": 0o644}},
		{"secret defaultMode applies to every file", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptr[int32](0o400)}},
			map[string]string{"pass": "s3cret"}, map[string]os.FileMode{"user": 0o400, "pass": 0o400}},
		{"downwardAPI writes metadata fields", corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
			{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
		}}},
			map[string]string{"name": "web", "ns": "default", "uid": "uid-1", "labels": "app=\"web\"\ntier=\"front\"",
				"annotations": `note="a \"quoted\" value"`, "app": "web"}, nil},
		{"projected merges configMap, secret, downwardAPI and token", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr[int32](0o640),
			Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
					Items: []corev1.KeyToPath{{Key: "a.conf", Path: "cfg/a"}}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"},
					Items: []corev1.KeyToPath{{Key: "user", Path: "user"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "api"}},
			}}},
			map[string]string{"cfg/a": "A", "user": "admin", "namespace": "default", "token": "tok-123"},
			map[string]os.FileMode{"token": 0o640, "cfg/a": 0o640}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(t.TempDir(), src)
			pod := testPod(corev1.Volume{Name: "v", VolumeSource: tc.vol})
			pod.Spec.ServiceAccountName = "robot"
			paths, err := m.Setup(context.Background(), pod)
			if err != nil {
				t.Fatal(err)
			}
			dir := paths["v"]
			if dir != m.VolumeDir(pod.UID, "v") {
				t.Fatalf("path %q, want %q", dir, m.VolumeDir(pod.UID, "v"))
			}
			for p, want := range tc.files {
				if got := read(t, filepath.Join(dir, p)); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			for p, want := range tc.modes {
				if got := perm(t, filepath.Join(dir, p)); got != want {
					t.Errorf("mode of %s = %#o, want %#o", p, got, want)
				}
			}
			// The visible names are symlinks through ..data, and nothing else is visible.
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "..") {
					continue
				}
				target, err := os.Readlink(filepath.Join(dir, e.Name()))
				if err != nil || target != filepath.Join("..data", e.Name()) {
					t.Errorf("%s -> %q (%v), want a symlink into ..data", e.Name(), target, err)
				}
			}
		})
	}
}

func TestSetupReportsMissingObjectsUnlessOptional(t *testing.T) {
	src := newObjects()
	src.configMap(t, "cfg", map[string]string{"a": "A"})
	tests := []struct {
		name    string
		vol     corev1.VolumeSource
		wantErr string // empty: no error
	}{
		{"missing configMap fails", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}, `pod default/web volume "v": configmap "nope" not found`},
		{"missing optional configMap gives an empty volume", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr(true)}}, ""},
		{"missing key fails", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "zz", Path: "zz"}}}},
			`pod default/web volume "v": configmap "cfg" has no key "zz"`},
		{"missing key of optional configMap is skipped", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Optional: ptr(true), Items: []corev1.KeyToPath{{Key: "zz", Path: "zz"}}}}, ""},
		{"missing secret fails", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope"}}, `secret "nope" not found`},
		{"missing optional secret in a projection is skipped", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptr(true)}}}}}, ""},
		{"missing service account token is explained", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}},
			`no service account token for pod default/web: the node has no object of type serviceaccounttoken`},
		{"mode above 0777 fails", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr[int32](0o1777)}}, "defaultMode 01777 is out of range"},
		{"unsupported downward field fails", corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}}, `fieldPath "status.podIP" is not supported`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewManager(t.TempDir(), src)
			pod := testPod(corev1.Volume{Name: "v", VolumeSource: tc.vol})
			paths, err := m.Setup(context.Background(), pod)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				entries, _ := os.ReadDir(paths["v"])
				for _, e := range entries {
					if !strings.HasPrefix(e.Name(), "..") {
						t.Errorf("unexpected file %s in an empty optional volume", e.Name())
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			var ve *Error
			if !errors.As(err, &ve) || ve.Pod != "default/web" || ve.Volume != "v" {
				t.Fatalf("error %#v is not a *Error naming the pod and volume", err)
			}
		})
	}
}

func TestRefreshSwapsContentAtomically(t *testing.T) {
	src := newObjects()
	src.configMap(t, "cfg", map[string]string{"a": "one", "gone": "x"})
	m := NewManager(t.TempDir(), src)
	pod := testPod(corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}})
	ctx := context.Background()
	paths, err := m.Setup(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	dir := paths["v"]
	path := filepath.Join(dir, "a") // the path a container reads by name
	held, err := os.Open(path)      // a reader in the middle of reading the old version
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	oldTarget, _ := os.Readlink(filepath.Join(dir, "..data"))

	src.configMap(t, "cfg", map[string]string{"a": "two", "new": "n"})
	if err := m.Refresh(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != "two" {
		t.Fatalf("after the update %s reads %q, want %q", path, got, "two")
	}
	buf := make([]byte, 10)
	n, _ := held.Read(buf)
	if string(buf[:n]) != "one" {
		t.Fatalf("a file opened before the update reads %q, want the whole old version %q", buf[:n], "one")
	}
	if read(t, filepath.Join(dir, "new")) != "n" {
		t.Error("a new key did not appear")
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); !os.IsNotExist(err) {
		t.Errorf("a removed key is still visible: %v", err)
	}
	newTarget, _ := os.Readlink(filepath.Join(dir, "..data"))
	if newTarget == oldTarget {
		t.Fatal("..data was not swapped")
	}
	if _, err := os.Stat(filepath.Join(dir, oldTarget)); !os.IsNotExist(err) {
		t.Errorf("old content dir %s was not removed: %v", oldTarget, err)
	}

	// Nothing changed: Refresh and a fresh Manager (a restart) leave ..data alone.
	if err := m.Refresh(ctx, pod); err != nil {
		t.Fatal(err)
	}
	m2 := NewManager(m.root, src)
	if _, err := m2.Setup(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != newTarget {
		t.Fatalf("unchanged content was rewritten: ..data %s -> %s", newTarget, again)
	}
}

func TestHostPathTypes(t *testing.T) {
	base := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(base, "dir"), 0o755))
	must(os.WriteFile(filepath.Join(base, "file"), nil, 0o644))
	sock := filepath.Join(base, "s.sock")
	l, err := net.Listen("unix", sock)
	must(err)
	defer l.Close()

	tests := []struct {
		name    string
		path    string
		typ     corev1.HostPathType
		wantErr string
		check   func(t *testing.T, p string)
	}{
		{"unset type accepts a missing path", "missing", "", "", nil},
		{"Directory accepts a directory", "dir", corev1.HostPathDirectory, "", nil},
		{"Directory refuses a missing path", "nodir", corev1.HostPathDirectory, "does not exist", nil},
		{"Directory refuses a file", "file", corev1.HostPathDirectory, "is not a directory (it is a regular file)", nil},
		{"DirectoryOrCreate creates it", "made/deep", corev1.HostPathDirectoryOrCreate, "", func(t *testing.T, p string) {
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				t.Errorf("not created: %v", err)
			}
		}},
		{"DirectoryOrCreate refuses a file", "file", corev1.HostPathDirectoryOrCreate, "is not a directory", nil},
		{"File accepts a file", "file", corev1.HostPathFile, "", nil},
		{"File refuses a directory", "dir", corev1.HostPathFile, "is not a file (it is a directory)", nil},
		{"FileOrCreate creates an empty file", "newdir/f", corev1.HostPathFileOrCreate, "", func(t *testing.T, p string) {
			if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("not created: %v", err)
			}
		}},
		{"FileOrCreate refuses a directory", "dir", corev1.HostPathFileOrCreate, "is not a file", nil},
		{"Socket accepts a socket", "s.sock", corev1.HostPathSocket, "", nil},
		{"Socket refuses a file", "file", corev1.HostPathSocket, "is not a socket", nil},
		{"relative path is refused", "rel", "", "must be absolute", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(base, tc.path)
			if tc.name == "relative path is refused" {
				p = "rel/x"
			}
			typ := tc.typ
			pod := testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &typ}}})
			m := NewManager(t.TempDir(), newObjects())
			paths, err := m.Setup(context.Background(), pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `pod default/web volume "h"`) {
					t.Fatalf("error %v, want one naming the pod, the volume and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if paths["h"] != p {
				t.Fatalf("path %q, want the host path %q", paths["h"], p)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestEscapesAreRefused(t *testing.T) {
	src := newObjects()
	src.configMap(t, "cfg", map[string]string{"a": "A"})
	item := func(p string) corev1.VolumeSource {
		return corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
			Items: []corev1.KeyToPath{{Key: "a", Path: p}}}}
	}
	tests := []struct {
		name    string
		vol     corev1.VolumeSource
		wantErr string
	}{
		{"absolute item path", item("/tmp/evil"), "must be relative"},
		{"dot-dot item path", item("../evil"), `must not start with ".."`},
		{"dot-dot inside an item path", item("a/../../evil"), `must not contain ".."`},
		{"item path into ..data", item("..data/evil"), `must not start with ".."`},
		{"downwardAPI path escaping", corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "x/../../../evil", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}, `must not contain ".."`},
		{"token path escaping", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "/evil"}}}}}, "must be relative"},
	}
	src.put(t, TypeServiceAccountToken, "default", "web", map[string]any{"podUID": "uid-1", "tokens": []map[string]any{{"expirationSeconds": 3600, "token": "t"}}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outer := t.TempDir()
			root := filepath.Join(outer, "root")
			m := NewManager(root, src)
			_, err := m.Setup(context.Background(), testPod(corev1.Volume{Name: "v", VolumeSource: tc.vol}))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `volume "v"`) {
				t.Fatalf("error %v, want one naming the volume and %q", err, tc.wantErr)
			}
			entries, _ := os.ReadDir(outer)
			if len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "root") {
				t.Fatalf("something was written outside the root: %v", entries)
			}
		})
	}
	t.Run("bad volume name", func(t *testing.T) {
		m := NewManager(t.TempDir(), src)
		_, err := m.Setup(context.Background(), testPod(corev1.Volume{Name: "../x", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}))
		if err == nil || !strings.Contains(err.Error(), "bad volume name") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestMounts(t *testing.T) {
	src := newObjects()
	src.configMap(t, "cfg", map[string]string{"a": "A"})
	outside := t.TempDir()
	m := NewManager(t.TempDir(), src)
	pod := testPod(
		corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
	)
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	// A container made a symlink in its emptyDir pointing out of it.
	if err := os.Symlink(outside, filepath.Join(paths["data"], "link")); err != nil {
		t.Fatal(err)
	}
	env := []corev1.EnvVar{{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
	tests := []struct {
		name     string
		mounts   []corev1.VolumeMount
		wantHost string // relative to the data volume, or "cfg" for the configMap dir
		wantRO   bool
		wantErr  string
	}{
		{"whole volume, writable", []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}, ".", false, ""},
		{"readOnly is honoured", []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}, ".", true, ""},
		{"configMap is always read-only", []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg"}}, "cfg", true, ""},
		{"subPath is created inside the volume", []corev1.VolumeMount{{Name: "data", MountPath: "/logs", SubPath: "logs/app"}}, "logs/app", false, ""},
		{"subPathExpr expands env", []corev1.VolumeMount{{Name: "data", MountPath: "/mine", SubPathExpr: "per-pod/$(POD)"}}, "per-pod/web", false, ""},
		{"unknown volume names container and mount", []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}}, "", false, `container "app" mount at "/x": the pod has no volume "nope"`},
		{"subPath with dot-dot is refused", []corev1.VolumeMount{{Name: "data", MountPath: "/x", SubPath: "../../etc"}}, "", false, `must not start with ".."`},
		{"subPath through an escaping symlink is refused", []corev1.VolumeMount{{Name: "data", MountPath: "/x", SubPath: "link/sub"}}, "", false, "symlink leading outside the volume"},
		{"relative mountPath is refused", []corev1.VolumeMount{{Name: "data", MountPath: "rel"}}, "", false, "mountPath must be absolute"},
		{"unknown subPathExpr variable is refused", []corev1.VolumeMount{{Name: "data", MountPath: "/x", SubPathExpr: "$(NOPE)"}}, "", false, "$(NOPE) is not an env variable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &corev1.Container{Name: "app", Env: env, VolumeMounts: tc.mounts}
			got, err := m.Mounts(pod, c, paths)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if entries, _ := os.ReadDir(outside); len(entries) != 0 {
					t.Fatalf("something was created outside the volume: %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(paths["data"], tc.wantHost)
			if tc.wantHost == "cfg" {
				want = paths["cfg"]
			}
			realWant, _ := filepath.EvalSymlinks(want)
			if len(got) != 1 || (got[0].HostPath != want && got[0].HostPath != realWant) || got[0].Readonly != tc.wantRO || got[0].ContainerPath != tc.mounts[0].MountPath {
				t.Fatalf("mount %+v, want host %s readOnly %v", got, want, tc.wantRO)
			}
			if fi, err := os.Stat(got[0].HostPath); err != nil || !fi.IsDir() {
				t.Fatalf("host path not a directory: %v", err)
			}
		})
	}
}

const tmpfsMagic = 0x01021994

func TestEmptyDirMemoryAndCleanup(t *testing.T) {
	m := NewManager(t.TempDir(), newObjects())
	pod := testPod(
		corev1.Volume{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("8Mi"))}}},
		corev1.Volume{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("10"))}}},
	)
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		if strings.Contains(err.Error(), "emptyDir medium Memory needs a tmpfs mount") && strings.Contains(err.Error(), `volume "mem"`) {
			t.Skipf("this process may not mount tmpfs; the error is the clear one: %v", err)
		}
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(paths["mem"], &st); err != nil || st.Type != tmpfsMagic {
		t.Fatalf("memory emptyDir is not a tmpfs (type %#x, %v)", st.Type, err)
	}
	if perm(t, paths["disk"]) != 0o777 {
		t.Errorf("emptyDir mode %#o, want 0777", perm(t, paths["disk"]))
	}
	if _, err := m.Setup(context.Background(), pod); err != nil { // idempotent: no second mount
		t.Fatal(err)
	}
	if mps, _ := mountsUnder(paths["mem"]); len(mps) != 1 {
		t.Fatalf("mounts at the memory emptyDir after two Setups: %v", mps)
	}
	if err := os.WriteFile(filepath.Join(paths["disk"], "big"), make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	usage, err := m.Usage(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range usage {
		if u.Volume == "disk" && (!u.Exceeded() || u.Bytes != 64) {
			t.Errorf("disk usage %+v, want 64 bytes over its limit of 10", u)
		}
		if u.Volume == "mem" && (u.Exceeded() || u.Limit.String() != "8Mi") {
			t.Errorf("mem usage %+v", u)
		}
	}
	if err := m.Cleanup(pod.UID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.PodDir(pod.UID)); !os.IsNotExist(err) {
		t.Fatalf("pod dir still there: %v", err)
	}
	if mps, _ := mountsUnder(m.PodDir(pod.UID)); len(mps) != 0 {
		t.Fatalf("mounts left: %v", mps)
	}
}

func TestConcurrentReaderNeverSeesAPartialFile(t *testing.T) {
	src := newObjects()
	big := func(c byte) string { return strings.Repeat(string(c), 64*1024) }
	src.configMap(t, "cfg", map[string]string{"blob": big('a')})
	m := NewManager(t.TempDir(), src)
	pod := testPod(corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}})
	paths, err := m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(paths["v"], "blob")
	done := make(chan struct{})
	bad := make(chan string, 1)
	reads := 0
	go func() {
		defer close(bad)
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				bad <- err.Error()
				return
			}
			reads++
			if len(b) != 64*1024 || strings.Count(string(b), string(b[0])) != len(b) {
				bad <- fmt.Sprintf("read %d bytes of mixed content", len(b))
				return
			}
		}
	}()
	for i := range 20 {
		src.configMap(t, "cfg", map[string]string{"blob": big(byte('a' + i%26))})
		if err := m.Refresh(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if msg, ok := <-bad; ok {
		t.Fatalf("a reader saw a broken file during updates: %s", msg)
	}
	if reads == 0 {
		t.Fatal("the reader never read")
	}
}
