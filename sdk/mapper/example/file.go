// Package example is a complete mapper: protocol "file", each property a whitespace-separated field
// of a text file (e.g. /proc/loadavg), writable properties written back to their file.
package example

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// Info registers the mapper as module "filemapper" serving devices of protocol "file".
var Info = sdk.Info{
	Name:  "filemapper",
	Group: "mapper",
	Doc:   "Example mapper: device properties are fields of text files.",
	New:   func() sdk.Module { return mapper.New("file", func() mapper.Driver { return &Driver{} }) },
}

func init() { sdk.Register(Info) }

// Driver serves one device. spec.protocol.configData: {"dir": "/proc"};
// visitors.configData: {"path": "loadavg", "field": 0}.
type Driver struct{ dir string }

type visitor struct {
	Path  string `json:"path"`
	Field int    `json:"field"`
}

func (d *Driver) Init(_ context.Context, p mapper.ProtocolConfig) error {
	var cfg struct {
		Dir string `json:"dir"`
	}
	if err := json.Unmarshal(p.ConfigData, &cfg); err != nil || !filepath.IsAbs(cfg.Dir) {
		return fmt.Errorf("device %s: configData.dir %q must be an absolute directory (%v)", p.Device, cfg.Dir, err)
	}
	d.dir = cfg.Dir
	return nil
}

func (d *Driver) file(p mapper.Property) (string, visitor, error) {
	var v visitor
	if err := json.Unmarshal(p.Visitor, &v); err != nil || v.Path == "" || v.Field < 0 {
		return "", v, fmt.Errorf("property %q: visitor needs {\"path\", \"field\" >= 0} (%v)", p.Name, err)
	}
	return filepath.Join(d.dir, filepath.Clean("/"+v.Path)), v, nil
}

func (d *Driver) Read(_ context.Context, _ mapper.DeviceRef, p mapper.Property) (mapper.Value, error) {
	path, v, err := d.file(p)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(b))
	if v.Field >= len(fields) {
		return nil, fmt.Errorf("property %q: %s has %d fields, no field %d", p.Name, path, len(fields), v.Field)
	}
	return fields[v.Field], nil // a string: the runtime checks it against the property's type
}

func (d *Driver) Write(_ context.Context, _ mapper.DeviceRef, p mapper.Property, value mapper.Value) error {
	path, _, err := d.file(p)
	if err != nil {
		return err
	}
	s, err := mapper.FormatValue(p.Type, value)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(s+"\n"), 0o644)
}

func (d *Driver) Health(context.Context, mapper.DeviceRef) error {
	_, err := os.Stat(d.dir)
	return err
}

func (d *Driver) Close() error { return nil }
