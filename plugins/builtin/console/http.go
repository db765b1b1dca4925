package console

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

//go:embed assets
var assets embed.FS

var tmpl = template.Must(template.ParseFS(assets, "assets/templates.html"))

const (
	sessionCookie = "__Host-kedge-console"       // the pasted token
	loginCookie   = "__Host-kedge-console-login" // binds the login form's CSRF token to this browser
	maxFormBytes  = 64 << 10
	keepAlive     = 15 * time.Second
)

func (m *Module) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServer(http.FS(static))
	mux.Handle("GET /static/{file}", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".html") { // templates are not assets
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /login", m.loginPage)
	mux.HandleFunc("POST /login", m.login)
	mux.HandleFunc("POST /logout", m.logout)
	mux.HandleFunc("GET /{$}", m.fleetPage)
	mux.HandleFunc("GET /events", m.events)
	return secure(mux)
}

// secure adds the headers every response carries: no framing, no inline script, no sniffing, no
// referrer, HTTPS only.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin") // no-referrer would make browsers send Origin: null on our own forms
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		if r.Method == http.MethodPost && !sameOrigin(r) {
			http.Error(w, "cross-origin POST refused: the Origin header names another site", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin is true unless the browser says the request comes from another origin. An absent or
// opaque ("null") Origin proves nothing either way; the form's CSRF token decides then.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (m *Module) render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		m.host.Logger().Error("rendering a console page", "template", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

type loginData struct{ Error, CSRF string }

func (m *Module) loginPage(w http.ResponseWriter, r *http.Request) {
	m.showLogin(w, http.StatusOK, "")
}

func (m *Module) showLogin(w http.ResponseWriter, code int, msg string) {
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	pre := hex.EncodeToString(nonce)
	setCookie(w, loginCookie, pre, 10*time.Minute)
	m.render(w, code, "login", loginData{Error: msg, CSRF: csrfToken(m.csrfKey, "login\x00"+pre)})
}

func (m *Module) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		m.metrics.logins.WithLabelValues("bad_form").Inc()
		m.showLogin(w, http.StatusBadRequest, "The login form could not be read: "+err.Error())
		return
	}
	pre, err := r.Cookie(loginCookie)
	if err != nil || !validCSRF(m.csrfKey, "login\x00"+pre.Value, r.PostForm.Get("csrf")) {
		m.metrics.logins.WithLabelValues("csrf").Inc()
		m.showLogin(w, http.StatusForbidden, "The login form expired or did not come from this page (CSRF check failed); try again.")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	u, err := m.auth.user(r.Context(), token)
	var unauth errUnauthenticated
	switch {
	case errors.As(err, &unauth):
		m.metrics.logins.WithLabelValues("bad_token").Inc()
		m.showLogin(w, http.StatusUnauthorized, "The API server did not accept this token ("+unauth.reason+").")
		return
	case err != nil:
		m.metrics.logins.WithLabelValues("error").Inc()
		m.host.Logger().Warn("console login: cannot check the token", "err", err)
		m.showLogin(w, http.StatusBadGateway, "The API server could not be asked about the token: "+err.Error())
		return
	}
	m.metrics.logins.WithLabelValues("ok").Inc()
	m.host.Logger().Info("console login", "user", u.Name, "remote", r.RemoteAddr)
	setCookie(w, loginCookie, "", -1)
	setCookie(w, sessionCookie, token, m.SessionMaxAge)
	http.Redirect(w, r, "./", http.StatusSeeOther)
}

// session returns the request's user, or writes the answer for a request without a valid session.
func (m *Module) session(w http.ResponseWriter, r *http.Request, page bool) (*user, string, bool) {
	c, err := r.Cookie(sessionCookie)
	token := ""
	if err == nil {
		token = c.Value
	}
	u, err := m.auth.user(r.Context(), token)
	var unauth errUnauthenticated
	switch {
	case errors.As(err, &unauth):
		m.metrics.refused.WithLabelValues("session").Inc()
		if token != "" {
			setCookie(w, sessionCookie, "", -1) // forged, expired or revoked
		}
		if page {
			http.Redirect(w, r, "login", http.StatusSeeOther)
		} else {
			http.Error(w, "no valid session: log in again", http.StatusUnauthorized)
		}
		return nil, "", false
	case err != nil:
		m.host.Logger().Warn("console: cannot check a session token", "err", err)
		http.Error(w, "the API server could not be asked about the session: "+err.Error(), http.StatusBadGateway)
		return nil, "", false
	}
	return u, token, true
}

func (m *Module) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	_, token, ok := m.session(w, r, true)
	if !ok {
		return
	}
	if err := r.ParseForm(); err != nil || !validCSRF(m.csrfKey, token, r.PostForm.Get("csrf")) {
		m.metrics.refused.WithLabelValues("csrf").Inc()
		http.Error(w, "logout refused: the form's CSRF token is missing or wrong", http.StatusForbidden)
		return
	}
	setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "login", http.StatusSeeOther)
}

// filter reads the view's query: only label, a Kubernetes label selector.
func filter(q url.Values) (labels.Selector, string, error) {
	for k := range q {
		if k != "label" {
			return nil, "", fmt.Errorf("unknown query parameter %q (the fleet view takes only label)", k)
		}
	}
	if len(q["label"]) > 1 {
		return nil, "", errors.New("query parameter label is given more than once")
	}
	raw := strings.TrimSpace(q.Get("label"))
	if len(raw) > 1024 {
		return nil, "", errors.New("query parameter label is longer than 1024 bytes")
	}
	sel, err := labels.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("query parameter label is not a label selector: %w", err)
	}
	return sel, raw, nil
}

type fleetPageData struct {
	User, CSRF, Label string
	Fleet             Fleet
}

func (m *Module) view(w http.ResponseWriter, r *http.Request, page bool) (*user, string, labels.Selector, string, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	var sel labels.Selector
	var raw string
	if err == nil {
		sel, raw, err = filter(q)
	}
	if err != nil {
		m.metrics.refused.WithLabelValues("bad_query").Inc()
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return nil, "", nil, "", false
	}
	u, token, ok := m.session(w, r, page)
	if !ok {
		return nil, "", nil, "", false
	}
	if !u.Nodes {
		m.metrics.refused.WithLabelValues("forbidden").Inc()
		msg := fmt.Sprintf("User %q may not list nodes, so the fleet view is not shown.", u.Name)
		if page {
			m.render(w, http.StatusForbidden, "forbidden", msg)
		} else {
			http.Error(w, msg, http.StatusForbidden)
		}
		return nil, "", nil, "", false
	}
	return u, token, sel, raw, true
}

func (m *Module) fleetPage(w http.ResponseWriter, r *http.Request) {
	u, token, sel, raw, ok := m.view(w, r, true)
	if !ok {
		return
	}
	m.render(w, http.StatusOK, "fleetpage", fleetPageData{User: u.Name, CSRF: csrfToken(m.csrfKey, token), Label: raw,
		Fleet: m.fleet.view(sel, u.Pods, u.Devices)})
}

// events streams the fleet fragment to an open page whenever it changes for this user and filter.
func (m *Module) events(w http.ResponseWriter, r *http.Request) {
	u, token, sel, _, ok := m.view(w, r, false)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	m.metrics.streams.Inc()
	defer m.metrics.streams.Dec()
	ctx := r.Context()
	recheck := time.NewTicker(m.AuthCacheTTL)
	defer recheck.Stop()
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	var last []byte
	for {
		changed := m.fleet.watch() // before rendering: a change during rendering is not missed
		var b bytes.Buffer
		if err := tmpl.ExecuteTemplate(&b, "fleet", m.fleet.view(sel, u.Pods, u.Devices)); err != nil {
			m.host.Logger().Error("rendering the fleet", "err", err)
			return
		}
		if !bytes.Equal(b.Bytes(), last) {
			last = bytes.Clone(b.Bytes())
			data, _ := json.Marshal(b.String())
			if _, err := fmt.Fprintf(w, "event: fleet\ndata: %s\n\n", data); err != nil {
				return
			}
			fl.Flush()
			m.metrics.pushes.Inc()
			m.metrics.pushSize.Observe(float64(len(data)))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-recheck.C: // a revoked token or a withdrawn permission ends or narrows the stream
			nu, err := m.auth.user(ctx, token)
			var unauth errUnauthenticated
			if errors.As(err, &unauth) || (err == nil && !nu.Nodes) {
				_, _ = fmt.Fprint(w, "event: session\ndata: \"ended\"\n\n")
				fl.Flush()
				return
			}
			if err == nil {
				u = nu
			}
		}
	}
}
