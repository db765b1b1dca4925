package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The identity a node certificate carries, as Kubernetes and KubeEdge spell it.
const (
	NodeCNPrefix     = "system:node:"
	NodesOrg         = "system:nodes"
	NodeNameHeader   = "NodeName" // the header naming the node on GET /edge.crt (KubeEdge's)
	CAPath           = "/ca.crt"
	CertPath         = "/edge.crt"
	DefaultCertPort  = 10002
	DefaultHubPort   = 10000
	DefaultCloudDir  = "/var/lib/kedge/pki" // where cloudcore keeps its CA unless configured otherwise
	maxNodeNameBytes = 253
)

var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// CheckNodeName reports whether name can name a Kubernetes node: a DNS-1123 subdomain.
func CheckNodeName(name string) error {
	switch {
	case name == "":
		return errors.New("node name is empty")
	case len(name) > maxNodeNameBytes:
		return fmt.Errorf("node name is %d characters long; at most %d are allowed", len(name), maxNodeNameBytes)
	case !dns1123Subdomain.MatchString(name):
		return fmt.Errorf("node name %q is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)", name)
	}
	return nil
}

// NodeNameFromCert returns the node a certificate was issued to: its subject must be
// CN=system:node:<name>, O=system:nodes. It does not check the signature; verify the chain first.
func NodeNameFromCert(cert *x509.Certificate) (string, error) {
	name, ok := strings.CutPrefix(cert.Subject.CommonName, NodeCNPrefix)
	if !ok || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != NodesOrg {
		return "", fmt.Errorf("certificate subject %q is not a node identity (want CN=%s<name>, O=%s)", cert.Subject, NodeCNPrefix, NodesOrg)
	}
	if err := CheckNodeName(name); err != nil {
		return "", fmt.Errorf("certificate subject %q: %w", cert.Subject, err)
	}
	return name, nil
}
