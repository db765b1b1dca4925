package pki

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where cloudcore keeps the CA in Kubernetes unless told otherwise.
const (
	DefaultCASecretNamespace = "kedge-system"
	DefaultCASecretName      = "kedge-ca"
)

// SecretClient is the part of client-go's typed Secrets client that SecretStorage uses; pass
// clientset.CoreV1().Secrets(namespace). It is declared here so that edgecore, which links this
// package to join, does not link client-go.
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

var _ Storage = SecretStorage{}

// writeOnce are the items SecretStorage never replaces once stored: replacing the CA locks out
// every joined node, and replacing the token secret invalidates the tokens another replica handed out.
var writeOnce = map[string]bool{CACertName: true, CAKeyName: true, TokenSecretName: true}

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
func (s SecretStorage) Write(ctx context.Context, items ...Item) error {
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
