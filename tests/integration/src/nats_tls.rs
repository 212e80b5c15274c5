//! NATS over TLS with client certificates, against a real nats-server that
//! requires both and runs the shipped users: a stage connects with the CA,
//! its certificate and its password file; without a client certificate, or
//! without TLS, it is refused, and no error carries the password.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vaultline_bus::{Bus, Login, Tls};
use vaultline_testkit::NatsServer;

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("openssl is needed to make test certificates (apt install openssl)")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA, and a certificate it signed for `name` (`server` for 127.0.0.1,
/// or a client): (cert, key).
fn signed(dir: &Path, name: &str, extensions: &str) -> Result<(PathBuf, PathBuf)> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj"]);
    let subject = format!("/CN={name}");
    req.push(&subject);
    openssl(dir, &req)?;
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions)?;
    let cert = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    )?;
    Ok((dir.join(cert), dir.join(key)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_reaches_a_tls_only_server_with_its_client_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path();
    let mut ca = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ];
    ca.extend([
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
    ]);
    ca.extend(["-subj", "/CN=vaultline test CA"]);
    openssl(pki, &ca)?;
    let (server_cert, server_key) = signed(
        pki,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    let (client_cert, client_key) = signed(pki, "client", "extendedKeyUsage=clientAuth\n")?;
    let nats = NatsServer::start_tls(&server_cert, &server_key, &pki.join("ca.pem"))?;
    let tls = Tls {
        ca_file: Some(pki.join("ca.pem")),
        cert_file: Some(client_cert),
        key_file: Some(client_key),
    };
    let login = |role: &str, tls: &Tls| -> Result<Login> {
        Ok(Login {
            tls: tls.clone(),
            ..Login::password(NatsServer::user(role), nats.write_password_file(role, pki)?)
        })
    };

    // `vaultline migrate` as the admin, then the stage's own check, both over TLS.
    let admin = Bus::connect(&nats.url(), "test-admin", &login("admin", &tls)?).await?;
    admin.apply_stream(1).await?;
    let extractor = Bus::connect(&nats.url(), "test", &login("extractor", &tls)?).await?;
    extractor.check_stream().await?;

    let password = nats.password("extractor").to_owned();
    let refused = [
        (
            "no client certificate",
            Tls {
                ca_file: tls.ca_file.clone(),
                ..Tls::default()
            },
        ),
        ("no TLS settings at all", Tls::default()),
    ];
    for (what, tls) in refused {
        let error = Bus::connect(&nats.url(), "test", &login("extractor", &tls)?)
            .await
            .map(|_| ())
            .expect_err(what)
            .to_string();
        assert!(!error.contains(&password), "{what}: {error}");
    }
    Ok(())
}
