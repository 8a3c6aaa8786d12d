//! A throwaway PKI made with Debian's `openssl` command: a CA, and server certificates it
//! signs for `localhost` and 127.0.0.1 (rustls refuses a self-signed certificate that is its
//! own trust anchor, so the CA is separate, as in any real deployment).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The CA's files in `dir`.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    ca_key: PathBuf,
}

/// A server certificate and its key.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA (P-256, valid one day) in `dir`.
    pub fn new(dir: &Path) -> Pki {
        crate::require_tool("openssl");
        std::fs::create_dir_all(dir).expect("pki dir");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=decnet test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir,
        );
        Pki {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
        }
    }

    /// A server certificate `NAME.pem` / `NAME.key` for localhost and 127.0.0.1, signed by
    /// the CA.
    pub fn server(&self, name: &str) -> ServerCert {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.join(&ext),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("extensions file");
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
            &self.dir,
        );
        let (ca, ca_key) = (self.ca.to_str().unwrap(), self.ca_key.to_str().unwrap());
        openssl(
            &[
                "x509", "-req", "-in", &csr, "-CA", ca, "-CAkey", ca_key, "-out", &cert, "-days",
                "1", "-extfile", &ext,
            ],
            &self.dir,
        );
        ServerCert {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }
}
