//! The vendor's licence issuing tool. A cargo example, so it is never in the packages (they
//! hold the `quire` binary alone).
//!
//!   cargo run --example issue-license -- --signing-key FILE --customer "Acme" --servers 3 \
//!       [--allowance 1] [--expires 2027-12-31] [--not-before 2026-06-01] [--id L-42] \
//!       [--feature X]... [--kid prod-1]
//!   cargo run --example issue-license -- --generate FILE --kid prod-2
//!
//! The key goes to stdout, what it says to stderr. `--kid` may be left out when the signing
//! key's public key is in the keyring already (the kid is then read from there).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jiff::civil::Date;
use quire::license::key::parse_ymd;
use quire::license::validity::utc_day;
use quire::license::{
    Claims, Keyring, TEST_KID, issue, parse_and_verify, read_signing_key, signing_key_file,
};

#[derive(Debug, Parser)]
#[command(
    name = "issue-license",
    about = "Issue a Quire licence key, or generate a signing key"
)]
struct Args {
    /// Create a new signing key in FILE (never overwritten) and print its public key for the
    /// keyring (src/license/keyring.rs).
    #[arg(long, value_name = "FILE", requires = "kid", conflicts_with_all = ["signing_key", "customer", "servers"])]
    generate: Option<PathBuf>,
    /// The signing-key file to sign with.
    #[arg(long, value_name = "FILE", required_unless_present = "generate")]
    signing_key: Option<PathBuf>,
    /// The signing key's id in the keyring; default: looked up by its public key.
    #[arg(long)]
    kid: Option<String>,
    /// The customer's name, as `quire license show` and the console show it.
    #[arg(long, required_unless_present = "generate")]
    customer: Option<String>,
    /// Instances the customer paid for.
    #[arg(long, required_unless_present = "generate")]
    servers: Option<u32>,
    /// Extra instances tolerated for rolling deploys.
    #[arg(long, default_value_t = 1)]
    allowance: u32,
    /// The last valid day (YYYY-MM-DD, UTC); default: never expires.
    #[arg(long, value_parser = date_arg)]
    expires: Option<Date>,
    /// The first valid day (YYYY-MM-DD, UTC); default: today.
    #[arg(long, value_parser = date_arg)]
    not_before: Option<Date>,
    /// The licence id; default: a new UUID (v7).
    #[arg(long)]
    id: Option<String>,
    /// A feature name; repeatable.
    #[arg(long = "feature", value_name = "NAME")]
    features: Vec<String>,
}

fn date_arg(text: &str) -> Result<Date, String> {
    parse_ymd(text).ok_or_else(|| format!("expected a date YYYY-MM-DD, found {text:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.generate {
        Some(file) => generate(file, args.kid.as_deref().unwrap_or_default()),
        None => issue_key(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(file: &Path, kid: &str) -> anyhow::Result<()> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    write_new_secret(file, &signing_key_file(&key, kid))?;
    let public = hex::encode(key.verifying_key().as_bytes());
    eprintln!(
        "wrote the signing key for kid {kid} to {}: keep it secret and off the repository",
        file.display()
    );
    eprintln!("add its public key to PRODUCTION_KEYS in src/license/keyring.rs:");
    eprintln!("    ({kid:?}, {public:?}),");
    println!("{public}");
    Ok(())
}

/// Creates `file` readable by its owner only, refusing to replace one: overwriting a signing
/// key would orphan every licence issued with it.
fn write_new_secret(file: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}

fn issue_key(args: &Args) -> anyhow::Result<()> {
    let path = args.signing_key.as_deref().expect("clap requires it");
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = read_signing_key(&text).with_context(|| format!("signing key {}", path.display()))?;
    let public = key.verifying_key();
    let kid = resolve_kid(args.kid.as_deref(), &public)?;
    let today = utc_day(jiff::Timestamp::now());
    let claims = Claims {
        kid: kid.clone(),
        id: args
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        customer: args.customer.clone().expect("clap requires it"),
        issued_at: today,
        not_before: args.not_before.unwrap_or(today),
        expires_at: args.expires,
        servers: args.servers.expect("clap requires it"),
        allowance: args.allowance,
        features: args.features.clone(),
    };
    let licence = issue(&claims, &key)?;
    // What was signed must read back: the same code path every instance runs.
    parse_and_verify(&licence, &Keyring::default().with(kid.clone(), public))
        .context("the issued key does not verify")?;
    describe(&claims);
    println!("{licence}");
    Ok(())
}

/// The kid to sign as: the one given, checked against the keyring when the keyring knows the
/// key or the kid, else the keyring's kid for this key.
fn resolve_kid(given: Option<&str>, public: &VerifyingKey) -> anyhow::Result<String> {
    let keyring = Keyring::builtin_for(false);
    let known = keyring.kid_of(public);
    let kid = match (given, known) {
        (None, Some(known)) => known,
        (None, None) => bail!(
            "this signing key's public key is in no keyring of this source: pass --kid, and add \
             the key to src/license/keyring.rs before shipping"
        ),
        (Some(given), Some(known)) if given != known => {
            bail!("this signing key is trusted as kid {known:?}, not {given:?}")
        }
        (Some(given), None) if keyring.get(given).is_some() => {
            bail!("kid {given:?} belongs to another public key in the keyring")
        }
        (Some(given), None) => {
            eprintln!(
                "warning: kid {given:?} is not in the keyring: no binary accepts this key until \
                 its public key is added to src/license/keyring.rs"
            );
            given
        }
        (Some(given), Some(_)) => given,
    };
    if kid == TEST_KID {
        eprintln!("warning: signed with the TEST key: release builds refuse this licence");
    }
    Ok(kid.to_owned())
}

fn describe(claims: &Claims) {
    let expires = claims
        .expires_at
        .map_or_else(|| "never".to_owned(), |d| d.to_string());
    eprintln!(
        "licence {} for {:?}: {} servers (+{} allowance), valid {} to {}, kid {}, features [{}]",
        claims.id,
        claims.customer,
        claims.servers,
        claims.allowance,
        claims.not_before,
        expires,
        claims.kid,
        claims.features.join(", ")
    );
}
