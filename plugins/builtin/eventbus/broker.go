package eventbus

import (
	"context"
	"log/slog"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// broker is the embedded MQTT broker (mochi-mqtt) on one TCP listener.
type broker struct {
	server   *mochi.Server
	listener *listeners.TCP
	self     *listeners.TCP // plain loopback listener for eventbus's own client while listener is TLS
	auth     *brokerAuth
}

// startBroker listens on address (port 0 picks a free one) and serves; auth decides who may connect
// (see brokerauth.go), hooks see every packet after it (durable.go). Without a password file or client
// CA every client is allowed: keep the address on loopback then (a non-loopback address is logged as a
// warning).
func startBroker(address string, log *slog.Logger, auth *brokerAuth, hooks ...mochi.Hook) (*broker, error) {
	blog := slog.New(minLevel{log.With("part", "broker").Handler(), slog.LevelError}) // mochi warns about every closed connection
	s := mochi.New(&mochi.Options{Logger: blog, InlineClient: false})
	if err := s.AddHook(auth, nil); err != nil {
		return nil, err
	}
	for _, h := range hooks {
		if err := s.AddHook(h, nil); err != nil {
			return nil, err
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "kedge-internal", Address: address, TLSConfig: auth.tls})
	if err := s.AddListener(l); err != nil {
		return nil, err
	}
	var self *listeners.TCP
	if auth.tls != nil {
		self = listeners.NewTCP(listeners.Config{ID: selfListener, Address: "127.0.0.1:0"})
		if err := s.AddListener(self); err != nil {
			return nil, err
		}
	}
	if err := s.Serve(); err != nil {
		_ = s.Close()
		return nil, err
	}
	b := &broker{server: s, listener: l, self: self, auth: auth}
	if host, _, _ := net.SplitHostPort(b.Addr()); !isLoopback(host) && auth.open() {
		log.Warn("the embedded MQTT broker listens beyond loopback and accepts every client without authentication (set broker.passwordFile or broker.clientCAFile)", "address", b.Addr())
	} else {
		log.Info("embedded MQTT broker listening", "address", b.Addr(), "tls", auth.tls != nil, "passwords", auth.users != nil,
			"clientCertificates", auth.tls != nil && auth.tls.ClientCAs != nil)
	}
	return b, nil
}

// Addr is the bound host:port.
func (b *broker) Addr() string { return b.listener.Address() }

// selfURL is where eventbus's own client connects: the plain loopback self listener while the public
// one speaks TLS, else the public one.
func (b *broker) selfURL() string {
	if b.self != nil {
		return "tcp://" + b.self.Address()
	}
	return "tcp://" + b.Addr()
}

func (b *broker) close() { _ = b.server.Close() }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// minLevel drops records below a level (mochi logs every connection at info).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
