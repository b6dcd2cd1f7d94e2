package revproxy

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// BundleFile is the name of the CA bundle next to the CA's certificate:
// the system's roots and the proxy's CA in one PEM file, for clients that
// take one file of trusted CAs and replace the system's roots with it
// (npm's cafile, pip's cert, SSL_CERT_FILE).
const BundleFile = "bundle.pem"

// systemRootFiles are where Linux distributions keep their bundle of
// trusted CAs, tried in order.
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL, CentOS
	"/etc/ssl/cert.pem",                                 // Alpine, macOS
}

// SystemRootsPEM returns the PEM certificates the system trusts, and
// where they were read: the file named by $SSL_CERT_FILE if set (as Go
// programs and OpenSSL do), else the first distribution bundle found,
// and the *.pem and *.crt files of the directories in $SSL_CERT_DIR.
// Only the CERTIFICATE blocks that parse are kept.
func SystemRootsPEM() ([]byte, []string, error) {
	var files []string
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = append(files, f)
	} else {
		for _, f := range systemRootFiles {
			if _, err := os.Stat(f); err == nil {
				files = append(files, f)
				break
			}
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("SSL_CERT_DIR")) {
		if dir == "" {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("system CAs: SSL_CERT_DIR: %w", err)
		}
		var names []string
		for _, e := range ents {
			if n := e.Name(); strings.HasSuffix(n, ".pem") || strings.HasSuffix(n, ".crt") {
				names = append(names, filepath.Join(dir, n))
			}
		}
		sort.Strings(names)
		files = append(files, names...)
	}
	if len(files) == 0 {
		return nil, nil, errors.New("system CAs: no bundle found (set SSL_CERT_FILE)")
	}
	var out bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("system CAs: %w", err)
		}
		for {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				continue
			}
			pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
		}
	}
	if out.Len() == 0 {
		return nil, nil, fmt.Errorf("system CAs: no certificate in %s", strings.Join(files, ", "))
	}
	return out.Bytes(), files, nil
}

// A Bundle is the system's roots and the proxy's CA in one PEM file.
type Bundle struct {
	PEM     []byte   // the roots, then the CA's certificate
	File    string   // where it was written: <CA dir>/bundle.pem
	Sources []string // the files the system's roots came from
}

// WriteBundle writes the bundle of the system's roots ([SystemRootsPEM])
// and ca's certificate next to the certificate, as [BundleFile], mode
// 0644, replacing the file at once (readers see the old bundle or the new
// one). It is written anew at each start, so it follows the system's
// roots.
func WriteBundle(ca *CA) (*Bundle, error) {
	roots, sources, err := SystemRootsPEM()
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	var buf bytes.Buffer
	buf.Write(roots)
	buf.WriteString("# go-cache-plugin revproxy CA\n")
	buf.Write(ca.CertPEM)
	if !bytes.HasSuffix(ca.CertPEM, []byte("\n")) {
		buf.WriteByte('\n')
	}
	b := &Bundle{PEM: buf.Bytes(), File: filepath.Join(filepath.Dir(ca.CertFile), BundleFile), Sources: sources}
	f, err := os.CreateTemp(filepath.Dir(b.File), ".tmp-bundle-*")
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b.PEM)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, b.File)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("CA bundle: write %s: %w", b.File, err)
	}
	return b, nil
}
