//! Real headless Chromium driven over WebDriver (Debian's chromium + chromium-driver).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Proc, free_port};

pub struct Browser {
    pub client: fantoccini::Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that saves downloads into `downloads`.
    pub async fn start(downloads: &Path, logs: &Path) -> Browser {
        // Two TLS backends are linked into the test binary; WebDriver on loopback needs neither,
        // but the client wants one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd, logs);
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a literal object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut last_err = None;
        // chromedriver takes a moment to listen.
        for _ in 0..100 {
            match fantoccini::ClientBuilder::rustls()
                .expect("tls")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                    };
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "cannot start Chromium via chromedriver (apt-get install chromium chromium-driver): {last_err:?}\n{}",
            driver.log()
        );
    }
}
