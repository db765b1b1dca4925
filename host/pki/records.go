package pki

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kind is a kind of record a Records holds.
type Kind string

// The kinds of records: join tokens by ID, and the certificates issued to each node by node name.
const (
	KindToken Kind = "token"
	KindNode  Kind = "node"
)

// Records keeps small JSON records by kind and name — the join tokens handed out and the
// certificates issued per node — where every cloudcore process using the same CA sees them: the
// certificate server that checks and consumes tokens, and 'cloudcore token create/ls/revoke' run
// beside it. FileRecords keeps them in the CA's folder, SecretRecords in Kubernetes Secrets.
type Records interface {
	// Get returns the record, or an error matching fs.ErrNotExist.
	Get(ctx context.Context, kind Kind, name string) ([]byte, error)
	// List returns every record of kind by name.
	List(ctx context.Context, kind Kind) (map[string][]byte, error)
	// Update reads the record (nil when absent), calls fn with it and stores what fn returns
	// (nil: delete), atomically with respect to every other Update of the same record from this
	// process or another. fn may be called more than once (after a lost race) and must depend on
	// its argument only; an error from fn is returned as is and nothing is stored.
	Update(ctx context.Context, kind Kind, name string, fn func(old []byte) ([]byte, error)) error
	// String says where the records live, for messages.
	String() string
}

// FileRecords keeps each record in a file, Dir/tokens/<id>.json and Dir/nodes/<name>.json
// (folders 0700, files 0600, written through a temporary file and a rename; a name longer than 200
// bytes is stored as sha256-<hex of its SHA-256>.json). Updates hold an
// exclusive flock(2) on Dir/records.lock, so a running cloudcore and the 'cloudcore token' command
// on the same host never lose each other's changes. Dir is cloudhub's pkiDir.
type FileRecords struct {
	Dir string
}

var _ Records = FileRecords{}

// fileRecordsMu serializes Updates within this process; the flock serializes processes.
var fileRecordsMu sync.Mutex

func (r FileRecords) String() string { return r.Dir }

func (r FileRecords) folder(kind Kind) string {
	if kind == KindNode {
		return filepath.Join(r.Dir, "nodes")
	}
	return filepath.Join(r.Dir, "tokens")
}

func (r FileRecords) path(kind Kind, name string) (string, error) {
	if err := checkRecordName(name); err != nil {
		return "", err
	}
	if len(name) > maxFileRecordName {
		// A long node name: file names have at most 255 bytes.
		sum := sha256.Sum256([]byte(name))
		name = "sha256-" + hex.EncodeToString(sum[:])
	}
	return filepath.Join(r.folder(kind), name+".json"), nil
}

// maxFileRecordName is the longest record name FileRecords uses as a file name as is.
const maxFileRecordName = 200

// checkRecordName keeps names usable as file names: what CheckNodeName allows, which covers token IDs.
func checkRecordName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." || !dns1123Subdomain.MatchString(name) {
		return fmt.Errorf("record name %q is not a DNS-1123 subdomain", name)
	}
	return nil
}

func (r FileRecords) Get(_ context.Context, kind Kind, name string) ([]byte, error) {
	p, err := r.path(kind, name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

func (r FileRecords) List(_ context.Context, kind Kind) (map[string][]byte, error) {
	dir := r.folder(kind)
	entries, err := os.ReadDir(dir)
	if isNotExist(err) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if isNotExist(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, e.Name()), err)
		}
		out[name] = data
	}
	return out, nil
}

func (r FileRecords) Update(_ context.Context, kind Kind, name string, fn func([]byte) ([]byte, error)) error {
	p, err := r.path(kind, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	fileRecordsMu.Lock()
	defer fileRecordsMu.Unlock()
	unlock, err := lockFile(filepath.Join(r.Dir, "records.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	old, err := os.ReadFile(p)
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	data, err := fn(old)
	if err != nil {
		return err
	}
	if data == nil {
		if err := os.Remove(p); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	return writeFileAtomic(p, data, 0o600)
}

// SecretClient's list and delete, which SecretRecords needs besides; client-go's typed Secrets
// client has them all.
type RecordSecretClient interface {
	SecretClient
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Labels and types of the Secrets SecretRecords keeps.
const (
	recordComponentLabel = "app.kubernetes.io/component"
	recordNameAnnotation = "kedge.io/record-name"
	recordDataKey        = "record"
	maxRecordUpdates     = 16
)

// SecretRecords keeps each record in its own Secret in Namespace (the namespace of cloudhub's
// caSecret), bootstrap-token style: kedge-join-token-<id> (type kedge.io/join-token) and
// kedge-node-<name> (type kedge.io/node-certificates), the JSON record under the data key
// "record". Every replica of cloudcore and the 'cloudcore token' command read and write the same
// Secrets; Update writes under the resourceVersion it read, so concurrent changes are retried, never
// lost. RBAC: get, list, create, update, delete on Secrets in Namespace.
type SecretRecords struct {
	Secrets   RecordSecretClient
	Namespace string
}

var _ Records = SecretRecords{}

func (r SecretRecords) String() string { return "Secrets in namespace " + r.Namespace }

func (r SecretRecords) secretName(kind Kind, name string) (string, error) {
	if err := checkRecordName(name); err != nil {
		return "", err
	}
	prefix := "kedge-join-token-"
	if kind == KindNode {
		prefix = "kedge-node-"
	}
	if len(prefix)+len(name) <= maxNodeNameBytes {
		return prefix + name, nil
	}
	sum := sha256.Sum256([]byte(name)) // a long node name: the Secret name must stay within 253
	return prefix + hex.EncodeToString(sum[:20]), nil
}

func secretType(kind Kind) corev1.SecretType {
	if kind == KindNode {
		return "kedge.io/node-certificates"
	}
	return "kedge.io/join-token"
}

func component(kind Kind) string {
	if kind == KindNode {
		return "node-certificates"
	}
	return "join-token"
}

func (r SecretRecords) Get(ctx context.Context, kind Kind, name string) ([]byte, error) {
	sn, err := r.secretName(kind, name)
	if err != nil {
		return nil, err
	}
	sec, err := r.Secrets.Get(ctx, sn, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, &fs.PathError{Op: "read", Path: "Secret " + r.Namespace + "/" + sn, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", r.Namespace, sn, err)
	}
	return sec.Data[recordDataKey], nil
}

func (r SecretRecords) List(ctx context.Context, kind Kind) (map[string][]byte, error) {
	list, err := r.Secrets.List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kedge," + recordComponentLabel + "=" + component(kind)})
	if err != nil {
		return nil, fmt.Errorf("list %s records in %s: %w", kind, r, err)
	}
	out := map[string][]byte{}
	for _, s := range list.Items {
		if s.Type != secretType(kind) {
			continue
		}
		name := s.Annotations[recordNameAnnotation]
		if name == "" {
			continue
		}
		out[name] = s.Data[recordDataKey]
	}
	return out, nil
}

func (r SecretRecords) Update(ctx context.Context, kind Kind, name string, fn func([]byte) ([]byte, error)) error {
	sn, err := r.secretName(kind, name)
	if err != nil {
		return err
	}
	where := "Secret " + r.Namespace + "/" + sn
	for attempt := 1; ; attempt++ {
		retry := attempt < maxRecordUpdates
		sec, err := r.Secrets.Get(ctx, sn, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			sec, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", where, err)
		}
		var old []byte
		if sec != nil {
			old = sec.Data[recordDataKey]
		}
		data, err := fn(old)
		if err != nil {
			return err
		}
		switch {
		case data == nil && sec == nil:
			return nil
		case data == nil:
			rv := sec.ResourceVersion
			err = r.Secrets.Delete(ctx, sn, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				return nil
			}
			if apierrors.IsConflict(err) && retry {
				continue
			}
			return fmt.Errorf("delete %s: %w", where, err)
		case sec == nil:
			_, err = r.Secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Name: sn, Namespace: r.Namespace,
					Labels:      map[string]string{"app.kubernetes.io/managed-by": "kedge", recordComponentLabel: component(kind)},
					Annotations: map[string]string{recordNameAnnotation: name},
				},
				Type: secretType(kind),
				Data: map[string][]byte{recordDataKey: data},
			}, metav1.CreateOptions{})
			switch {
			case err == nil:
				return nil
			case apierrors.IsAlreadyExists(err) && retry:
				continue
			case apierrors.IsNotFound(err):
				return fmt.Errorf("create %s: %w (create namespace %s first)", where, err, r.Namespace)
			}
			return fmt.Errorf("create %s: %w", where, err)
		default:
			sec = sec.DeepCopy()
			sec.Data = map[string][]byte{recordDataKey: data}
			_, err = r.Secrets.Update(ctx, sec, metav1.UpdateOptions{})
			switch {
			case err == nil:
				return nil
			case (apierrors.IsConflict(err) || apierrors.IsNotFound(err)) && retry:
				continue
			}
			return fmt.Errorf("update %s: %w", where, err)
		}
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var errRecordDamaged = errors.New("record is damaged")
