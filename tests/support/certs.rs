//! Test certificates made with the `openssl` command in a temporary directory: a CA
//! (`ca.pem`), a broker certificate for 127.0.0.1 / localhost (`broker.pem`, `broker.key`), a
//! client certificate `CN=alice,OU=eng,O=Acme,C=FR` (`client.pem`, `client.key`) and the same
//! subject's certificate that expired yesterday (`expired.pem`, `expired.key`). Keys are P-256,
//! PKCS#8 PEM, unencrypted, as every client family reads them.

use std::path::PathBuf;
use std::process::Command;

pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn make() -> Self {
        let dir = tempfile::Builder::new().prefix("skiff-certs-").tempdir().expect("temp dir");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca_ext =
            ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=skiff-test-ca"],
                &ca_ext,
            ]
            .concat(),
        );
        let client = "extendedKeyUsage=clientAuth\n";
        for (name, subject, ext, days) in [
            (
                "broker",
                "/CN=localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
                "2",
            ),
            ("client", "/C=FR/O=Acme/OU=eng/CN=alice", client, "2"),
            // `-days -1`: not after = now - 1 day, so the certificate is expired.
            ("expired", "/C=FR/O=Acme/OU=eng/CN=alice", client, "-1"),
        ] {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(d.join(&extfile), format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"))
                .expect("ext file");
            openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                days,
                "-extfile",
                &extfile,
            ]);
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path` as a string, for environment variables.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
