// Command mkimage turns a root filesystem folder into a single-layer image in docker-archive format
// (the format `ctr images import` reads), so tests and the demo get images without a registry:
//
//	go run ./hack/mkimage --rootfs DIR --tag localhost/busybox:local --cmd sh -o busybox.tar
//	go run ./hack/mkimage --binary _bin/edgecore --tag localhost/edgecore:local -o edgecore.tar
//	go run ./hack/mkimage --binary _bin/cloudcore --entrypoint /cloudcore --user 65532:65532 \
//	    --format oci --tag localhost/kedge/cloudcore:v0.1.0 -o cloudcore.oci.tar
//
// --format oci writes an OCI image layout archive (oci-layout, index.json, blobs/sha256/...), also
// importable with `ctr images import`; the image name is in the index's annotations.
//
// The layer is deterministic (sorted entries, zero times, uid/gid 0), so the same input gives the same
// image ID.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

func main() {
	rootfs := flag.String("rootfs", "", "folder whose content becomes the image's filesystem")
	binary := flag.String("binary", "", "a static binary: the image holds only it, as /<name>, and runs it")
	tag := flag.String("tag", "", "image reference, e.g. localhost/busybox:local (required)")
	cmd := flag.String("cmd", "", "default command, space separated (default: /<binary name> with --binary)")
	out := flag.String("o", "", "output .tar (required)")
	flag.StringVar(&opts.entrypoint, "entrypoint", "", "entrypoint, space separated (arguments given to the container follow it)")
	flag.StringVar(&opts.user, "user", "", "user[:group] the image runs as, e.g. 65532:65532")
	flag.StringVar(&opts.format, "format", "docker", "docker (docker-archive) or oci (OCI image layout)")
	flag.Parse()
	if opts.format != "docker" && opts.format != "oci" {
		fmt.Fprintf(os.Stderr, "mkimage: --format %q: want docker or oci\n", opts.format)
		os.Exit(2)
	}
	if err := run(*rootfs, *binary, *tag, *cmd, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(2)
	}
}

// opts are the settings added for release images (make images); their zero values keep the old output.
var opts struct{ entrypoint, user, format string }

type entry struct {
	name string
	hdr  *tar.Header
	body []byte
}

func run(rootfs, binary, tag, cmd, out string) error {
	if tag == "" || out == "" || (rootfs == "") == (binary == "") {
		return errors.New("want --tag, -o and exactly one of --rootfs or --binary (see -h)")
	}
	var entries []entry
	if binary != "" {
		b, err := os.ReadFile(binary)
		if err != nil {
			return err
		}
		name := filepath.Base(binary)
		entries = append(entries, entry{name: name, hdr: &tar.Header{Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b))}, body: b})
		for _, d := range []string{"tmp", "etc"} {
			entries = append(entries, entry{name: d, hdr: &tar.Header{Typeflag: tar.TypeDir, Mode: 0o1777}})
		}
		if cmd == "" && opts.entrypoint == "" {
			cmd = "/" + name
		}
	} else {
		err := filepath.WalkDir(rootfs, func(path string, d fs.DirEntry, err error) error {
			if err != nil || path == rootfs {
				return err
			}
			rel, _ := filepath.Rel(rootfs, path)
			info, err := os.Lstat(path)
			if err != nil {
				return err
			}
			h := &tar.Header{Mode: int64(info.Mode().Perm())}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(path)
				if err != nil {
					return err
				}
				h.Typeflag, h.Linkname = tar.TypeSymlink, target
				entries = append(entries, entry{name: rel, hdr: h})
			case info.IsDir():
				h.Typeflag = tar.TypeDir
				if info.Mode()&fs.ModeSticky != 0 {
					h.Mode |= 0o1000
				}
				entries = append(entries, entry{name: rel, hdr: h})
			case info.Mode().IsRegular():
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				h.Typeflag, h.Size = tar.TypeReg, int64(len(b))
				entries = append(entries, entry{name: rel, hdr: h, body: b})
			default:
				return fmt.Errorf("%s: only files, folders and symlinks go into an image", path)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, e := range entries {
		e.hdr.Name = filepath.ToSlash(e.name)
		if e.hdr.Typeflag == tar.TypeDir {
			e.hdr.Name += "/"
		}
		e.hdr.ModTime, e.hdr.Format = time.Unix(0, 0), tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return err
		}
		if _, err := tw.Write(e.body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerID := hex.EncodeToString(layerSum[:])
	imgConfig := map[string]any{
		"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	if cmd != "" {
		imgConfig["Cmd"] = strings.Fields(cmd)
	}
	if opts.entrypoint != "" {
		imgConfig["Entrypoint"] = strings.Fields(opts.entrypoint)
	}
	if opts.user != "" {
		imgConfig["User"] = opts.user
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "created": "1970-01-01T00:00:00Z",
		"config": imgConfig,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	if opts.format == "oci" {
		return writeOCI(out, tag, layer.Bytes(), layerID, config, hex.EncodeToString(configSum[:]))
	}
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{tag}, "Layers": []string{layerID + "/layer.tar"}}})
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	ow := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		body []byte
	}{{layerID + "/layer.tar", layer.Bytes()}, {configName, config}, {"manifest.json", manifest}} {
		if err := ow.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := io.Copy(ow, bytes.NewReader(e.body)); err != nil {
			return err
		}
	}
	if err := ow.Close(); err != nil {
		return err
	}
	return f.Close()
}

// writeOCI writes an OCI image layout archive: the uncompressed layer, the config and the manifest as
// blobs, and index.json naming the image (containerd reads io.containerd.image.name).
func writeOCI(out, tag string, layer []byte, layerID string, config []byte, configID string) error {
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + configID, "size": len(config)},
		"layers": []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + layerID, "size": len(layer)}},
	})
	if err != nil {
		return err
	}
	manifestSum := sha256.Sum256(manifest)
	manifestID := hex.EncodeToString(manifestSum[:])
	ref := tag
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		ref = tag[i+1:]
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifestID, "size": len(manifest),
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": tag, "org.opencontainers.image.ref.name": ref}}},
	})
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	ow := tar.NewWriter(f)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := ow.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	for _, e := range []struct {
		name string
		body []byte
	}{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {"index.json", index},
		{"blobs/sha256/" + manifestID, manifest}, {"blobs/sha256/" + configID, config}, {"blobs/sha256/" + layerID, layer}} {
		if err := ow.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := ow.Write(e.body); err != nil {
			return err
		}
	}
	if err := ow.Close(); err != nil {
		return err
	}
	return f.Close()
}
