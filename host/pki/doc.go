// Package pki is how cloud and edge come to trust each other, the KubeEdge way.
//
// The cloud side keeps a certificate authority (CA) and a join-token secret in a Storage, prints join
// tokens ("<sha256 of the CA cert>.<JWT HS256>"), serves the CA and signs node certificates over
// HTTPS (CertServer: GET /ca.crt, GET /edge.crt), and gives the hub its server certificate and TLS
// configs. The edge side joins with a token (Join: fetch the CA, check its hash against the token,
// send a CSR) and keeps its certificate fresh (Renewer: renews with the current certificate at a
// jittered 70–90% of its lifetime).
package pki
