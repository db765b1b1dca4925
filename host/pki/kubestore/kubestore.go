// Package kubestore keeps the cloud's PKI in Kubernetes: the CA and the token secret in one Secret
// (SecretStorage, a pki.Storage) and the join-token and node-certificate records in Secrets of their
// own (SecretRecords, a pki.Records), so that cloudcore replicas share them. It is cloud only: it
// links k8s.io/api, which package pki — linked by every edgecore to join — must not.
package kubestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
)

// maxSecretNameBytes is the longest name of a Secret (a DNS-1123 subdomain).
const maxSecretNameBytes = 253

// Where cloudcore keeps the CA in Kubernetes unless told otherwise.
const (
	DefaultCASecretNamespace = "kedge-system"
	DefaultCASecretName      = "kedge-ca"
)

// SecretClient is the part of client-go's typed Secrets client that SecretStorage uses; pass
// clientset.CoreV1().Secrets(namespace).
type SecretClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
	Create(ctx context.Context, secret *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
	Update(ctx context.Context, secret *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error)
}

// SecretStorage keeps the items in one Kubernetes Secret of type Opaque, one data key per item
// (ca.crt, ca.key, token.secret: the item names), so that several cloudcore replicas — or one whose
// disk was replaced — share one CA.
//
// Write stores all its items in one API call: the Secret is created with them, or updated under the
// resourceVersion it was read at, so a change made meanwhile by another replica is a conflict and
// the write is tried again on the newer Secret. The CA's items and the token secret are written once:
// a Write that would change one that exists fails with an error matching fs.ErrExist and changes
// nothing, and LoadOrCreateCA then loads what the other replica stored. That is what makes creating
// the CA race-safe, and what keeps a damaged Secret from ever being overwritten.
type SecretStorage struct {
	// Secrets is a client for Secrets in Namespace.
	Secrets SecretClient
	// Namespace and Name name the Secret; Namespace must exist.
	Namespace, Name string
}

var _ pki.Storage = SecretStorage{}

// writeOnce are the items SecretStorage never replaces once stored: replacing the CA locks out
// every joined node, and replacing the token secret invalidates the tokens another replica handed out.
var writeOnce = map[string]bool{pki.CACertName: true, pki.CAKeyName: true, pki.TokenSecretName: true}

// maxSecretWrites bounds the retries of a Write that keeps losing races with other writers.
const maxSecretWrites = 8

func (s SecretStorage) String() string { return "Secret " + s.Namespace + "/" + s.Name }

// Read returns the item's data key; a missing Secret or key matches fs.ErrNotExist.
func (s SecretStorage) Read(ctx context.Context, name string) ([]byte, error) {
	sec, err := s.Secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, &fs.PathError{Op: "read", Path: s.String(), Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s, err)
	}
	data, ok := sec.Data[name]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: s.String() + " key " + name, Err: fs.ErrNotExist}
	}
	return data, nil
}

// Write stores the items in the Secret in one API call, creating the Secret when it is missing.
func (s SecretStorage) Write(ctx context.Context, items ...pki.Item) error {
	for attempt := 1; ; attempt++ {
		retry := attempt < maxSecretWrites
		sec, err := s.Secrets.Get(ctx, s.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Name: s.Name, Namespace: s.Namespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "kedge", "app.kubernetes.io/component": "cloudcore-pki"},
				},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{},
			}
			for _, it := range items {
				sec.Data[it.Name] = it.Data
			}
			_, err = s.Secrets.Create(ctx, sec, metav1.CreateOptions{})
			switch {
			case err == nil:
				return nil
			case apierrors.IsAlreadyExists(err) && retry:
				continue // another replica created it first: write into theirs (or find our items taken)
			case apierrors.IsNotFound(err):
				return fmt.Errorf("create %s: %w (create namespace %s first)", s, err, s.Namespace)
			default:
				return fmt.Errorf("create %s: %w", s, err)
			}
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", s, err)
		}
		data := maps.Clone(sec.Data)
		if data == nil {
			data = map[string][]byte{}
		}
		for _, it := range items {
			if old, ok := data[it.Name]; ok && writeOnce[it.Name] && !bytes.Equal(old, it.Data) {
				return fmt.Errorf("%s already holds %s; it is never replaced: %w", s, it.Name, fs.ErrExist)
			}
			data[it.Name] = it.Data
		}
		sec = sec.DeepCopy()
		sec.Data = data
		// sec carries the resourceVersion it was read at: a change made since is a conflict.
		_, err = s.Secrets.Update(ctx, sec, metav1.UpdateOptions{})
		switch {
		case err == nil:
			return nil
		case (apierrors.IsConflict(err) || apierrors.IsNotFound(err)) && retry:
			continue
		default:
			return fmt.Errorf("update %s: %w", s, err)
		}
	}
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

var _ pki.Records = SecretRecords{}

func (r SecretRecords) String() string { return "Secrets in namespace " + r.Namespace }

func (r SecretRecords) secretName(kind pki.Kind, name string) (string, error) {
	if err := pki.CheckRecordName(name); err != nil {
		return "", err
	}
	prefix := "kedge-join-token-"
	if kind == pki.KindNode {
		prefix = "kedge-node-"
	}
	if len(prefix)+len(name) <= maxSecretNameBytes {
		return prefix + name, nil
	}
	sum := sha256.Sum256([]byte(name)) // a long node name: the Secret name must stay within 253
	return prefix + hex.EncodeToString(sum[:20]), nil
}

func secretType(kind pki.Kind) corev1.SecretType {
	if kind == pki.KindNode {
		return "kedge.io/node-certificates"
	}
	return "kedge.io/join-token"
}

func component(kind pki.Kind) string {
	if kind == pki.KindNode {
		return "node-certificates"
	}
	return "join-token"
}

func (r SecretRecords) Get(ctx context.Context, kind pki.Kind, name string) ([]byte, error) {
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

func (r SecretRecords) List(ctx context.Context, kind pki.Kind) (map[string][]byte, error) {
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

func (r SecretRecords) Update(ctx context.Context, kind pki.Kind, name string, fn func([]byte) ([]byte, error)) error {
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
