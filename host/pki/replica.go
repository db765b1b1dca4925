package pki

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// Replica certificates: cloudcore replicas forward requests to each other (a kubectl exec that
// reached replica A for a node whose tunnel replica B holds) over mTLS with the cluster CA. A
// replica's certificate serves both ends: CN kedge:replica:<identity>, O kedge:replicas, server and
// client auth. Node certificates come from the same CA, so a peer is a replica only when its
// certificate names ReplicasOrg (VerifyReplicaCert).
const (
	ReplicaCNPrefix = "kedge:replica:"
	ReplicasOrg     = "kedge:replicas"
)

// IssueReplicaCert signs a replica certificate for identity, valid for the given IPs and DNS names.
func (ca *CA) IssueReplicaCert(pub crypto.PublicKey, identity string, ips []net.IP, dnsNames []string, validity time.Duration) (*x509.Certificate, error) {
	if identity == "" {
		return nil, errors.New("replica certificate: empty identity")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: ReplicaCNPrefix + identity, Organization: []string{ReplicasOrg}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: ips, DNSNames: dnsNames,
	}, pub, validity)
}

// ReplicaIdentity returns the identity a verified certificate names if it is a replica certificate
// (O kedge:replicas, CN kedge:replica:<identity>); an error naming what it is otherwise.
func ReplicaIdentity(cert *x509.Certificate) (string, error) {
	cn := cert.Subject.CommonName
	if !slices.Contains(cert.Subject.Organization, ReplicasOrg) || len(cn) <= len(ReplicaCNPrefix) || cn[:len(ReplicaCNPrefix)] != ReplicaCNPrefix {
		return "", fmt.Errorf("certificate %q (O=%v) is not a cloudcore replica's (want CN %s<identity>, O %s)", cn, cert.Subject.Organization, ReplicaCNPrefix, ReplicasOrg)
	}
	return cn[len(ReplicaCNPrefix):], nil
}
