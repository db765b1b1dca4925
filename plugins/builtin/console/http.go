package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
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
	mux.HandleFunc("GET /{$}", m.page("fleet"))
	mux.HandleFunc("GET /node", m.page("node"))
	mux.HandleFunc("GET /devices", m.page("devices"))
	mux.HandleFunc("GET /rollouts", m.page("rollouts"))
	mux.HandleFunc("POST /rollouts", m.pauseResume)
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
	if wait, ok := m.limiter.allow(r.RemoteAddr, time.Now()); !ok {
		m.metrics.logins.WithLabelValues("rate_limited").Inc()
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		m.showLogin(w, http.StatusTooManyRequests, fmt.Sprintf("Too many login attempts from your address; try again in %d s.", secs))
		return
	}
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

// query is a view's parsed query string.
type query struct {
	view  string // fleet, node, devices, rollouts
	sel   labels.Selector
	label string // fleet: the label selector as given
	name  string // node: the node
	node  string // devices: only this node's devices (optional)
	page  int
}

// viewParams are the query parameters each view takes.
var viewParams = map[string][]string{
	"fleet":    {"label", "page"},
	"node":     {"name"},
	"devices":  {"node", "page"},
	"rollouts": nil,
}

// parseQuery reads view's query (the events stream names the view in "view"); anything it does not
// take, a repeated parameter or a malformed value is an error naming it.
func parseQuery(view string, q url.Values, stream bool) (query, error) {
	if stream {
		if len(q["view"]) > 1 {
			return query{}, errors.New("query parameter view is given more than once")
		}
		if view = q.Get("view"); view == "" {
			view = "fleet"
		}
		if _, ok := viewParams[view]; !ok {
			return query{}, fmt.Errorf("query parameter view is %q: want fleet, node, devices or rollouts", view)
		}
	}
	out := query{view: view, sel: labels.Everything(), page: 1}
	for k, v := range q {
		if stream && k == "view" {
			continue
		}
		if !slices.Contains(viewParams[view], k) {
			return query{}, fmt.Errorf("unknown query parameter %q (the %s view takes %s)", k, view, takes(viewParams[view]))
		}
		if len(v) > 1 {
			return query{}, fmt.Errorf("query parameter %s is given more than once", k)
		}
	}
	raw := strings.TrimSpace(q.Get("label"))
	if len(raw) > 1024 {
		return query{}, errors.New("query parameter label is longer than 1024 bytes")
	}
	sel, err := labels.Parse(raw)
	if err != nil {
		return query{}, fmt.Errorf("query parameter label is not a label selector: %w", err)
	}
	out.sel, out.label = sel, raw
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 1_000_000 {
			return query{}, fmt.Errorf("query parameter page is %q: want a whole number from 1", p)
		}
		out.page = n
	}
	for _, x := range []struct {
		key string
		dst *string
	}{{"name", &out.name}, {"node", &out.node}} {
		v := q.Get(x.key)
		if v == "" {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return query{}, fmt.Errorf("query parameter %s is not a node name: %s", x.key, strings.Join(errs, "; "))
		}
		*x.dst = v
	}
	if view == "node" && out.name == "" {
		return query{}, errors.New("query parameter name (the node) is missing")
	}
	return out, nil
}

func takes(p []string) string {
	if len(p) == 0 {
		return "none"
	}
	return strings.Join(p, ", ")
}

// filter reads the fleet view's query (label, page).
func filter(q url.Values) (labels.Selector, string, error) {
	v, err := parseQuery("fleet", q, false)
	return v.sel, v.label, err
}

// allowed says whether u may see view, and if not why.
func allowed(u *user, view string) (bool, string) {
	switch view {
	case "fleet", "node":
		return u.Nodes, fmt.Sprintf("User %q may not list nodes, so the %s view is not shown.", u.Name, view)
	case "devices":
		return u.Devices, fmt.Sprintf("User %q may not list devices.kubeedge.io, so the devices view is not shown.", u.Name)
	case "rollouts":
		return u.Rollouts, fmt.Sprintf("User %q may not list pluginrollouts.kedge.io, so the rollouts view is not shown.", u.Name)
	}
	return false, "no such view"
}

func (m *Module) view(w http.ResponseWriter, r *http.Request, view string, page bool) (*user, string, query, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	var v query
	if err == nil {
		v, err = parseQuery(view, q, !page)
	}
	if err != nil {
		m.metrics.refused.WithLabelValues("bad_query").Inc()
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return nil, "", query{}, false
	}
	u, token, ok := m.session(w, r, page)
	if !ok {
		return nil, "", query{}, false
	}
	if ok, msg := allowed(u, v.view); !ok {
		m.metrics.refused.WithLabelValues("forbidden").Inc()
		if page {
			m.render(w, http.StatusForbidden, "forbidden", msg)
		} else {
			http.Error(w, msg, http.StatusForbidden)
		}
		return nil, "", query{}, false
	}
	return u, token, v, true
}

// fragment renders the live part of a view for u.
func (m *Module) fragment(v query, u *user, csrf string) ([]byte, error) {
	var data any
	switch v.view {
	case "fleet":
		data = m.fleet.view(v.sel, u, v.page, v.label)
	case "node":
		data = m.fleet.node(v.name, u)
	case "devices":
		data = m.fleet.deviceList(v.node, v.page)
	case "rollouts":
		rs := m.fleet.rolloutList()
		rs.CSRF = csrf
		data = rs
	}
	var b bytes.Buffer
	err := tmpl.ExecuteTemplate(&b, v.view, data)
	return b.Bytes(), err
}

// pageData is what every page shows around its view.
type pageData struct {
	Title, View, User, CSRF string
	Events                  string // the event stream's address (with the view's query)
	Nav                     *user
	Body                    template.HTML
	Label, Node             string
	NodeEvents              []EventRow
	ShowEvents              bool
}

func (m *Module) page(view string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, token, v, ok := m.view(w, r, view, true)
		if !ok {
			return
		}
		csrf := csrfToken(m.csrfKey, token)
		body, err := m.fragment(v, u, csrf)
		if err != nil {
			m.host.Logger().Error("rendering a console view", "view", view, "err", err)
			http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
			return
		}
		q := r.URL.Query()
		q.Set("view", view)
		d := pageData{Title: strings.ToUpper(view[:1]) + view[1:], View: view, User: u.Name, CSRF: csrf, Events: "events?" + q.Encode(),
			Nav: u, Body: template.HTML(body), Label: v.label, Node: v.name}
		if view == "node" && u.Events {
			d.ShowEvents = true
			d.NodeEvents = m.nodeEvents(r.Context(), v.name)
		}
		m.render(w, http.StatusOK, "page", d)
	}
}

// nodeEvents are the last Events about a node (read when the page is opened; not pushed live).
func (m *Module) nodeEvents(ctx context.Context, node string) []EventRow {
	list, err := m.client.CoreV1().Events("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.kind", "Node"),
			fields.OneTermEqualSelector("involvedObject.name", node)).String(), Limit: 200})
	if err != nil {
		m.host.Logger().Warn("console: cannot list a node's events", "node", node, "err", err)
		return []EventRow{{Type: "Warning", Reason: "ConsoleError", Message: "the events could not be read: " + err.Error()}}
	}
	var out []EventRow
	for _, e := range list.Items {
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.EventTime.Time
		}
		out = append(out, EventRow{Type: e.Type, Reason: e.Reason, Message: e.Message, Count: e.Count, Last: rfc3339(last)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last > out[j].Last })
	if len(out) > 20 {
		out = out[:20]
	}
	return out
}

// events streams a view's live part to an open page whenever it changes for this user and query.
func (m *Module) events(w http.ResponseWriter, r *http.Request) {
	u, token, v, ok := m.view(w, r, "", false)
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
	csrf := csrfToken(m.csrfKey, token)
	var last []byte
	for {
		changed, version := m.fleet.watch() // before rendering: a change during rendering is not missed
		b, err := m.renders.get(version, v, u, func() ([]byte, error) { return m.fragment(v, u, csrf) })
		if err != nil {
			m.host.Logger().Error("rendering a console view", "view", v.view, "err", err)
			return
		}
		if !bytes.Equal(b, last) {
			last = b
			data, _ := json.Marshal(string(b))
			if _, err := fmt.Fprintf(w, "event: view\ndata: %s\n\n", data); err != nil {
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
			if errors.As(err, &unauth) || (err == nil && !mayView(nu, v.view)) {
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

func mayView(u *user, view string) bool { ok, _ := allowed(u, view); return ok }

// pauseResume sets spec.paused of one PluginRollout, if the user may patch it (a SubjectAccessReview
// for the user, asked now, not cached) and the form carries the session's CSRF token.
func (m *Module) pauseResume(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	u, token, ok := m.session(w, r, true)
	if !ok {
		return
	}
	if err := r.ParseForm(); err != nil || !validCSRF(m.csrfKey, token, r.PostForm.Get("csrf")) {
		m.metrics.refused.WithLabelValues("csrf").Inc()
		m.metrics.actions.WithLabelValues("csrf").Inc()
		http.Error(w, "pause/resume refused: the form's CSRF token is missing or wrong", http.StatusForbidden)
		return
	}
	ns, name, paused := r.PostForm.Get("namespace"), r.PostForm.Get("name"), r.PostForm.Get("paused")
	var bad string
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		bad = "namespace: " + strings.Join(errs, "; ")
	} else if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		bad = "name: " + strings.Join(errs, "; ")
	} else if paused != "true" && paused != "false" {
		bad = fmt.Sprintf("paused is %q: want true or false", paused)
	}
	if bad != "" {
		m.metrics.actions.WithLabelValues("bad_form").Inc()
		http.Error(w, "pause/resume refused: "+bad, http.StatusBadRequest)
		return
	}
	may, err := m.auth.may(r.Context(), u, "patch", access{"kedge.io", "pluginrollouts", ns}, name)
	if err != nil {
		m.metrics.actions.WithLabelValues("error").Inc()
		http.Error(w, "the API server could not be asked: "+err.Error(), http.StatusBadGateway)
		return
	}
	if !may {
		m.metrics.refused.WithLabelValues("forbidden").Inc()
		m.metrics.actions.WithLabelValues("forbidden").Inc()
		m.render(w, http.StatusForbidden, "forbidden", fmt.Sprintf("User %q may not patch pluginrollouts.kedge.io %s/%s; nothing was changed.", u.Name, ns, name))
		return
	}
	patch := []byte(`{"spec":{"paused":` + paused + `}}`)
	if _, err := m.dyn.Resource(rolloutGVR).Namespace(ns).Patch(r.Context(), name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kedge-console"}); err != nil {
		code := http.StatusBadGateway
		if apierrors.IsNotFound(err) {
			code = http.StatusNotFound
		}
		m.metrics.actions.WithLabelValues("error").Inc()
		http.Error(w, "pause/resume failed: "+err.Error(), code)
		return
	}
	m.metrics.actions.WithLabelValues("ok").Inc()
	m.host.Logger().Info("console: PluginRollout paused/resumed", "user", u.Name, "rollout", ns+"/"+name, "paused", paused, "remote", r.RemoteAddr)
	http.Redirect(w, r, "rollouts", http.StatusSeeOther)
}

// renders lets the open pages that show the same thing share one rendering per published change:
// the fleet, node and devices fragments depend only on the view, its query and what the user may see
// (the rollouts fragment carries the session's CSRF token and is rendered per page).
type renders struct {
	mu      sync.Mutex
	entries map[string]*render
}

type render struct {
	version uint64
	once    sync.Once
	b       []byte
	err     error
}

func (r *renders) get(version uint64, v query, u *user, do func() ([]byte, error)) ([]byte, error) {
	if v.view == "rollouts" {
		return do()
	}
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%d\x00%t%t%t%t%t%t", v.view, v.label, v.name, v.node, v.page,
		u.Nodes, u.Pods, u.Devices, u.Rollouts, u.Events, u.Leases)
	r.mu.Lock()
	if r.entries == nil {
		r.entries = map[string]*render{}
	}
	e, ok := r.entries[key]
	if !ok || e.version != version {
		for k, old := range r.entries { // only the latest change's renderings are kept
			if old.version < version {
				delete(r.entries, k)
			}
		}
		e = &render{version: version}
		r.entries[key] = e
	}
	r.mu.Unlock()
	e.once.Do(func() { e.b, e.err = do() })
	return e.b, e.err
}
