// Package server serves a registry folder over HTTPS: GET /index.json (the signed envelope) and
// GET /artifacts/<sha256>. It never signs anything and holds no key: clients trust the index's
// signature, not the server, so TLS here protects privacy and, with a client CA, who may download.
package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kedge-io/kedge/plugin-registry/registry"
)

// Handler serves dir. Every answer is logged at debug level; refusals at info.
func Handler(dir string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /index.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		serveFile(w, r, filepath.Join(dir, registry.SignedFile), log)
	})
	mux.HandleFunc("GET /artifacts/{sha256}", func(w http.ResponseWriter, r *http.Request) {
		sum := r.PathValue("sha256")
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 || strings.ToLower(sum) != sum {
			log.Info("refused artifact request", "path", r.URL.Path, "remote", r.RemoteAddr, "peer", peer(r))
			http.Error(w, "an artifact is named by its sha256: 64 lower-case hex digits", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable") // named by content
		serveFile(w, r, filepath.Join(dir, registry.ArtifactsDir, sum), log)
	})
	return mux
}

func serveFile(w http.ResponseWriter, r *http.Request, path string, log *slog.Logger) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		log.Info("not found", "path", r.URL.Path, "remote", r.RemoteAddr, "peer", peer(r))
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if err != nil {
		log.Error("open", "path", path, "err", err)
		http.Error(w, "cannot read", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	log.Debug("serve", "path", r.URL.Path, "size", fi.Size(), "remote", r.RemoteAddr, "peer", peer(r))
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// peer is the client certificate's subject common name, when mutual TLS authenticated one.
func peer(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0].Subject.CommonName
	}
	return ""
}

// TLSConfig loads the server certificate and, when clientCA is set, requires every client to present
// a certificate signed by it (edge nodes use their node certificates).
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key are required (or --insecure for plain HTTP in tests)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := LoadCertPool(clientCA)
		if err != nil {
			return nil, fmt.Errorf("--client-ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadCertPool reads PEM certificates from path.
func LoadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// NewServer is an http.Server for h with timeouts suited to artifact downloads.
func NewServer(h http.Handler, tlsCfg *tls.Config, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelInfo),
	}
}
