//! Outgoing email: verification, password reset and invitation mails,
//! rendered from templates in `templates/mail/` (minijinja, with HTML
//! autoescaping) and delivered by the backend `[email]` config names:
//! `console` (logged; the zero-config default), `file` (`.eml` files) or
//! `smtp` (lettre over a pooled connection, STARTTLS or TLS with the
//! webpki roots).
//!
//! Delivery happens in the background with a timeout: an API answer never
//! waits for, or reveals, whether a mail was delivered (so password reset
//! cannot be used to probe for accounts). Failures are logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use serde::Serialize;

use crate::config::{Config, EmailBackend, SmtpTls};

/// The templates, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/mail/base.html")),
    ("verify.txt", include_str!("../templates/mail/verify.txt")),
    ("verify.html", include_str!("../templates/mail/verify.html")),
    ("reset.txt", include_str!("../templates/mail/reset.txt")),
    ("reset.html", include_str!("../templates/mail/reset.html")),
    ("invite.txt", include_str!("../templates/mail/invite.txt")),
    ("invite.html", include_str!("../templates/mail/invite.html")),
];

/// One mail to send: a template (`verify`, `reset`, `invite`) and its values.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Template name without extension.
    pub template: &'static str,
    /// Values for the template (`site` is added).
    pub context: serde_json::Value,
}

/// A mail could not be built or delivered.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address does not parse.
    #[error("bad address `{0}`")]
    Address(String),
    /// A template failed to render (a bug).
    #[error("rendering mail template `{0}` failed")]
    Template(String, #[source] minijinja::Error),
    /// The message could not be assembled.
    #[error("building the message failed")]
    Build(#[from] lettre::error::Error),
    /// The SMTP relay refused or could not be reached.
    #[error("SMTP delivery failed")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// Writing a mail file failed.
    #[error("writing the mail file failed")]
    File(#[from] std::io::Error),
}

/// Sends mail; see the module docs. Cheap to share.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    site: String,
    templates: Environment<'static>,
    timeout: Duration,
}

enum Transport {
    Console,
    File(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.transport {
            Transport::Console => "console",
            Transport::File(_) => "file",
            Transport::Smtp(_) => "smtp",
        };
        f.debug_struct("Mailer")
            .field("backend", &kind)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer `config` describes (validated by [`Config::load`]).
    pub fn new(config: &Config) -> Result<Mailer, MailError> {
        let email = &config.email;
        let transport = match email.backend {
            EmailBackend::Console => Transport::Console,
            EmailBackend::File => Transport::File(config.mail_dir()),
            EmailBackend::Smtp => {
                let smtp = &email.smtp;
                let builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Transport::Smtp(builder.build())
            }
        };
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates
                .add_template(name, source)
                .map_err(|e| MailError::Template((*name).to_owned(), e))?;
        }
        Ok(Mailer {
            transport,
            from: email
                .from
                .parse()
                .map_err(|_| MailError::Address(email.from.clone()))?,
            site: config.display_url(),
            templates,
            timeout: Duration::from_secs(email.smtp.timeout_secs.max(1) * 2),
        })
    }

    /// An absolute link to `path` on this server, for mails.
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.site)
    }

    /// Delivers `mail` in the background; failures are logged, never returned.
    pub fn send(self: &Arc<Mailer>, mail: Mail) {
        let mailer = self.clone();
        tokio::spawn(async move {
            let (to, template) = (mail.to.clone(), mail.template);
            match tokio::time::timeout(mailer.timeout, mailer.deliver(mail)).await {
                Ok(Ok(())) => tracing::debug!(template, "mail delivered"),
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), template, %to, "mail delivery failed");
                }
                Err(_) => tracing::warn!(template, %to, "mail delivery timed out"),
            }
        });
    }

    /// Renders and delivers `mail` now.
    pub async fn deliver(&self, mail: Mail) -> Result<(), MailError> {
        let (text, html) = self.render(&mail)?;
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| MailError::Address(mail.to.clone()))?;
        match &self.transport {
            Transport::Console => {
                tracing::info!(to = %mail.to, subject = %mail.subject, "email (console backend):\n{text}");
                Ok(())
            }
            transport => {
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .multipart(MultiPart::alternative_plain_html(text, html))?;
                match transport {
                    Transport::Smtp(smtp) => {
                        smtp.send(message).await?;
                    }
                    Transport::File(dir) => {
                        tokio::fs::create_dir_all(dir).await?;
                        let path = dir.join(format!("{}.eml", corral_core::id::new_id()));
                        tokio::fs::write(path, message.formatted()).await?;
                    }
                    Transport::Console => {}
                }
                Ok(())
            }
        }
    }

    fn render(&self, mail: &Mail) -> Result<(String, String), MailError> {
        #[derive(Serialize)]
        struct Context<'a> {
            site: &'a str,
            #[serde(flatten)]
            values: &'a serde_json::Value,
        }
        let context = Context {
            site: &self.site,
            values: &mail.context,
        };
        let render = |ext: &str| {
            let name = format!("{}.{ext}", mail.template);
            self.templates
                .get_template(&name)
                .and_then(|t| t.render(&context))
                .map_err(|e| MailError::Template(name, e))
        };
        Ok((render("txt")?, render("html")?))
    }
}
