//! Email delivery: SMTP settings (from the configuration, else from the console, sealed at rest),
//! building a report mail with its PDF attached, and one SMTP conversation per mail. The
//! `mailer` role sends from the outbox (`mailer.rs`).

pub mod mailer;

use std::str::FromStr;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::model::Mail;
use super::secrets::{SealError, Sealer};
use super::store::{Store, StoreError};
use crate::app::config::MailConfig;
use crate::config::Secret;

/// The flag holding settings saved in the console.
const SETTINGS_FLAG: &str = "mail.settings";

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid SMTP URL: {0}")]
    Url(String),
    #[error("invalid sender address \"{0}\"")]
    From(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("mail is set in the configuration (mail.smtp_url); change it there")]
    Configured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a relay on a trusted network).
    None,
    /// STARTTLS required.
    StartTls,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
}

/// Where and how to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl FromStr for SmtpUrl {
    type Err = MailError;

    fn from_str(s: &str) -> Result<Self, MailError> {
        let url = url::Url::parse(s).map_err(|e| MailError::Url(e.to_string()))?;
        let (default_port, default_tls) = match url.scheme() {
            "smtp" => (587, TlsMode::StartTls),
            "smtps" => (465, TlsMode::Implicit),
            other => {
                return Err(MailError::Url(format!(
                    "scheme \"{other}\": use smtp:// or smtps://"
                )));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MailError::Url("no host".into()))?
            .to_owned();
        let tls = match url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
        {
            None => default_tls,
            Some(v) => match v.as_str() {
                "none" => TlsMode::None,
                "starttls" => TlsMode::StartTls,
                "opportunistic" => TlsMode::Opportunistic,
                "implicit" => TlsMode::Implicit,
                _ => {
                    return Err(MailError::Url(format!(
                        "tls={v}: use none, starttls, opportunistic or implicit"
                    )));
                }
            },
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(SmtpUrl {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            user: Some(decode(url.username())).filter(|u| !u.is_empty()),
            password: url.password().map(|p| Secret::new(decode(p))),
        })
    }
}

/// The settings in effect.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub smtp: SmtpUrl,
    pub from: String,
    /// `config` or `console`.
    pub source: &'static str,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    smtp_url: String,
    from: String,
}

/// Settings from the configuration, else those saved in the console, else none.
pub async fn settings(
    store: &dyn Store,
    config: &MailConfig,
    sealer: &Sealer,
) -> Result<Option<MailSettings>, MailError> {
    if let Some(url) = &config.smtp_url {
        let from = config
            .from
            .clone()
            .ok_or_else(|| MailError::From("(mail.from is not set)".into()))?;
        return Ok(Some(MailSettings {
            smtp: url.expose().parse()?,
            from,
            source: "config",
        }));
    }
    let Some(saved) = store.flag(SETTINGS_FLAG).await? else {
        return Ok(None);
    };
    let saved: Saved =
        serde_json::from_str(&saved).map_err(|_| MailError::Seal(SealError::Unreadable))?;
    let url = sealer.open(&saved.smtp_url)?;
    Ok(Some(MailSettings {
        smtp: url.parse()?,
        from: saved.from,
        source: "console",
    }))
}

/// Saves settings made in the console, the URL (with its password) sealed; refused while the
/// configuration sets mail (which would win anyway).
pub async fn save_settings(
    store: &dyn Store,
    config: &MailConfig,
    sealer: &Sealer,
    smtp_url: &str,
    from: &str,
) -> Result<(), MailError> {
    if config.smtp_url.is_some() {
        return Err(MailError::Configured);
    }
    smtp_url.parse::<SmtpUrl>()?;
    from.parse::<Mailbox>()
        .map_err(|_| MailError::From(from.to_owned()))?;
    let saved = Saved {
        smtp_url: sealer.seal(smtp_url)?,
        from: from.to_owned(),
    };
    store
        .set_flag(
            SETTINGS_FLAG,
            &serde_json::to_string(&saved).unwrap_or_default(),
        )
        .await?;
    Ok(())
}

/// A stable Message-ID for an outbox row: the same mail sent twice is recognisably one mail.
pub fn message_id(mail_id: &str, from: Option<&str>) -> String {
    let domain = from
        .and_then(|f| f.rsplit_once('@'))
        .map_or("quire.local", |(_, d)| d.trim_end_matches('>'));
    format!("<{mail_id}@{domain}>")
}

/// Why a send failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFailure {
    pub transient: bool,
    pub message: String,
}

/// One SMTP conversation: the mail with its PDF. Ok carries the server's reply.
pub async fn send(
    settings: &MailSettings,
    mail: &Mail,
    pdf: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String, SendFailure> {
    let permanent = |message: String| SendFailure {
        transient: false,
        message,
    };
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|_| permanent(format!("invalid sender {}", settings.from)))?;
    let to: Mailbox = mail
        .recipient
        .parse()
        .map_err(|_| permanent(format!("invalid recipient {}", mail.recipient)))?;
    let text = SinglePart::plain(mail.body.clone());
    let builder = Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()));
    let message = match (pdf, &mail.attachment_name) {
        (Some(pdf), Some(name)) => {
            let pdf_type =
                ContentType::parse("application/pdf").map_err(|e| permanent(e.to_string()))?;
            builder.multipart(
                MultiPart::mixed()
                    .singlepart(text)
                    .singlepart(Attachment::new(name.clone()).body(pdf, pdf_type)),
            )
        }
        _ => builder.singlepart(text),
    }
    .map_err(|e| permanent(e.to_string()))?;
    let transport = transport(&settings.smtp, timeout).map_err(|e| permanent(e.to_string()))?;
    // The transport's own timeout covers connecting only; a server that stops answering midway
    // must not stall the mailer.
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Ok(Ok(resp)) => Ok(format!(
            "{} {}",
            resp.code(),
            resp.message().collect::<Vec<_>>().join(" ")
        )
        .trim()
        .to_owned()),
        Ok(Err(e)) => Err(SendFailure {
            transient: !e.is_permanent(),
            message: e.to_string(),
        }),
        Err(_) => Err(SendFailure {
            transient: true,
            message: format!("no answer from the SMTP server within {timeout:?}"),
        }),
    }
}

fn transport(
    smtp: &SmtpUrl,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let params = || TlsParameters::new(smtp.host.clone());
    let tls = match smtp.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(params()?),
        TlsMode::Opportunistic => Tls::Opportunistic(params()?),
        TlsMode::Implicit => Tls::Wrapper(params()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(user) = &smtp.user {
        let password = smtp
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_say_host_port_tls_and_auth() {
        let u: SmtpUrl = "smtp://reports%40x.io:p%40ss@mail.x.io".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("mail.x.io", 587, TlsMode::StartTls)
        );
        assert_eq!(u.user.as_deref(), Some("reports@x.io"));
        assert_eq!(u.password.unwrap().expose(), "p@ss");
        let u: SmtpUrl = "smtps://mail.x.io".parse().unwrap();
        assert_eq!((u.port, u.tls, u.user), (465, TlsMode::Implicit, None));
        let u: SmtpUrl = "smtp://relay:25?tls=none".parse().unwrap();
        assert_eq!((u.port, u.tls), (25, TlsMode::None));
        assert!("http://x".parse::<SmtpUrl>().is_err());
        assert!(
            "smtp://x?tls=maybe"
                .parse::<SmtpUrl>()
                .unwrap_err()
                .to_string()
                .contains("tls=maybe")
        );
    }

    #[test]
    fn message_ids_are_stable_and_use_the_sender_domain() {
        assert_eq!(
            message_id("m1", Some("Reports <reports@example.com>")),
            "<m1@example.com>"
        );
        assert_eq!(message_id("m1", None), "<m1@quire.local>");
    }
}
