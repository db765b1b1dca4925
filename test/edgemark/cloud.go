package edgemark

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk"
)

// Cloud is cloudcore's cloudhub and edgecontroller run in this process against a kube-apiserver,
// with their own router, SQLite store and module manager as cloudcore runs them: what the smoke
// test (and anyone embedding edgemark in a Go test) points hollow nodes at.
type Cloud struct {
	Hub        *cloudhub.Module
	Controller *edgecontroller.Module
	Devices    *devicecontroller.Module // nil unless CloudOptions.Devices
	Registry   *prometheus.Registry
	mgr        *modules.Manager
	db         *store.DB
}

// CloudOptions tune StartCloud; Configure, if set, changes the modules before they start.
type CloudOptions struct {
	Dir        string // the store and the PKI go here
	Kubeconfig string
	Configure  func(*cloudhub.Module, *edgecontroller.Module)
	// Devices also runs devicecontroller (the device CRDs must be installed), for twin reports.
	Devices bool
}

// StartCloud starts cloudhub (on 127.0.0.1, free ports) and edgecontroller.
func StartCloud(ctx context.Context, o CloudOptions) (*Cloud, error) {
	db, err := store.Open(filepath.Join(o.Dir, "cloud.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	rt := router.New(reg)
	c := &Cloud{Registry: reg, db: db, Hub: cloudhub.New(), Controller: edgecontroller.New()}
	c.Hub.Address, c.Hub.CertServerAddress, c.Hub.PKIDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(o.Dir, "pki")
	c.Controller.Kubeconfig = o.Kubeconfig
	if o.Configure != nil {
		o.Configure(c.Hub, c.Controller)
	}
	c.mgr = modules.NewManager(modules.Deps{NodeName: "cloudcore-edgemark", Router: rt, Store: db, Metrics: reg, StopTimeout: 10 * time.Second})
	hubInfo, _ := sdk.Lookup(cloudhub.Name)
	ctlInfo, _ := sdk.Lookup(edgecontroller.Name)
	planned := []modules.Planned{
		{Info: hubInfo, Settings: modules.Settings{Runtime: modules.Builtin}, Module: c.Hub},
		{Info: ctlInfo, Settings: modules.Settings{Runtime: modules.Builtin}, Module: c.Controller},
	}
	if o.Devices {
		c.Devices = devicecontroller.New()
		c.Devices.Kubeconfig = o.Kubeconfig
		devInfo, _ := sdk.Lookup(devicecontroller.Name)
		planned = append(planned, modules.Planned{Info: devInfo, Settings: modules.Settings{Runtime: modules.Builtin}, Module: c.Devices})
	}
	err = c.mgr.Start(ctx, planned)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("start cloudhub and edgecontroller: %w", err)
	}
	return c, nil
}

// Gather returns the metrics of the modules (each module has its own registry) and of Registry.
func (c *Cloud) Gather() ([]*dto.MetricFamily, error) {
	return prometheus.Gatherers{c.Registry, c.mgr}.Gather()
}

// Stop stops the modules and closes the store.
func (c *Cloud) Stop() {
	_ = c.mgr.Stop(context.Background())
	_ = c.db.Close()
}
