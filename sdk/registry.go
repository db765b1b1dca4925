package sdk

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sync"
)

// Info describes a module to the host.
type Info struct {
	// Name is unique and is the module's routing address and its key under `modules:` in the config.
	Name string
	// Group is the routing group (messages sent to a group reach all its modules).
	Group string
	// Doc is one line shown above the module's block in --defaultconfig.
	Doc string
	// Requires names modules that must be started before this one (and stopped after it).
	Requires []string
	// Enabled is the default for `enable:` when the config does not say.
	Enabled bool
	// Mailbox is the mailbox capacity; 0 means the host default.
	Mailbox int
	// New returns a fresh module holding its default settings (a pointer to a struct).
	New func() Module
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Info{}
	validName  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
)

// Register adds a builtin module; call it from an init function. A duplicate or malformed
// registration is a programming error and panics at startup, never later.
func Register(info Info) {
	if err := info.validate(); err != nil {
		panic("sdk.Register: " + err.Error())
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[info.Name]; dup {
		panic(fmt.Sprintf("sdk.Register: module %q registered twice", info.Name))
	}
	registry[info.Name] = info
}

// Lookup returns the registered module called name.
func Lookup(name string) (Info, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	info, ok := registry[name]
	return info, ok
}

// Registered returns every registered module, sorted by name.
func Registered() []Info {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Info, 0, len(registry))
	for _, info := range registry {
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

func (info Info) validate() error {
	if !validName.MatchString(info.Name) {
		return fmt.Errorf("module name %q must match %s", info.Name, validName)
	}
	if info.Group == "" {
		return fmt.Errorf("module %q has no group", info.Name)
	}
	if info.New == nil {
		return fmt.Errorf("module %q has no New function", info.Name)
	}
	m := info.New()
	if v := reflect.ValueOf(m); m == nil || v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("module %q: New must return a pointer to a struct (its settings), got %T", info.Name, m)
	}
	if slices.Contains(info.Requires, info.Name) {
		return fmt.Errorf("module %q requires itself", info.Name)
	}
	return nil
}
