package process

import (
	"context"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

var _ modules.SettingsChecker = (*module)(nil)

// CheckSettings has the plugin check its settings without starting its module: it launches the
// plugin (the same exec, checksum and handshake as Start), makes one Validate call — the plugin
// decodes the settings strictly and runs the module's sdk.Validator on a fresh value — and stops the
// plugin again. The problems have keys relative to the module's block. A plugin built before Validate
// existed answers Unimplemented: no problems, its settings are checked when it starts, as before.
// An error means the plugin could not be asked (it does not start, speaks another API version);
// Start reports that again.
func (m *module) CheckSettings(ctx context.Context) ([]*sdk.SettingError, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.StartTimeout)
	defer cancel()
	log := slog.Default().With("module", m.name, "plugin", m.path, "for", "validate")
	in, _, err := m.connect(log)
	if err != nil {
		return nil, err
	}
	defer in.cleanup() // go-plugin's graceful shutdown: the plugin exits by itself, killed after 2s
	resp, err := in.mod.Validate(ctx, &modulepb.ValidateRequest{ApiVersion: sdk.APIVersion, Module: m.name, Config: m.config})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("plugin %s: validate: %s%s", m.path, rpcMessage(err), in.stderr.tailNote())
	}
	var out []*sdk.SettingError
	for _, p := range resp.GetProblems() {
		out = append(out, &sdk.SettingError{Key: p.GetKey(), Problem: p.GetProblem()})
	}
	return out, nil
}
