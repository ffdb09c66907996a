//! `estate-gateway users …`: accounts and named tokens in the data folder's
//! `users.json` ([`super::users`]). Works while the gateway runs (it re-reads the file).
//!
//! Passwords come from a prompt (twice, not echoed) or, with `--password-stdin`, from
//! the first line of standard input (for scripts); never from the command line, where
//! `ps` would show them.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use super::users::UsersFile;
use super::Role;

/// `users` and its subcommands.
#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    /// The gateway's data folder (default: `gateway.data_dir` of --config).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The configuration file naming the data folder.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/estate-gateway/gateway.toml"
    )]
    pub config: PathBuf,
    /// The subcommand.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// What to do with the accounts.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add an account that signs in to the console.
    Add {
        /// Its name (what the audit records).
        name: String,
        /// viewer (reads), operator (also acts on alerts and roll calls), admin (also
        /// manages accounts).
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (the account's console sessions end).
    Passwd {
        /// The account.
        name: String,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account (its sessions end).
    Remove {
        /// The account.
        name: String,
    },
    /// List the accounts and named tokens (never a password or token).
    List,
    /// Named API tokens for integrations.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// What to do with the named tokens.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is kept).
    Add {
        /// Its name (what the audit records for its actions).
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Remove a token.
    Remove {
        /// The token's name.
        name: String,
    },
}

/// Runs one `users` subcommand: what to print on stdout.
pub fn run(args: UsersArgs) -> Result<String, String> {
    let dir = match args.data_dir {
        Some(d) => d,
        None => {
            let cfg = estate_config::Config::load(&args.config)
                .map_err(|e| format!("invalid config {}:\n{e}", args.config.display()))?;
            cfg.gateway.data_dir.clone().ok_or_else(|| {
                format!(
                    "no data folder: pass --data-dir or set gateway.data_dir in {}",
                    args.config.display()
                )
            })?
        }
    };
    let mut file = UsersFile::load(&dir).map_err(|e| e.to_string())?;
    let out = match args.command {
        UsersCommand::List => return Ok(list(&file)),
        UsersCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            let password = password(password_stdin, true)?;
            file.add_user(&name, role, &password)
                .map_err(|e| e.to_string())?;
            format!("added {name} ({})\n", role.as_str())
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
        } => {
            if file.user(&name).is_none() {
                return Err(format!("no account {name:?}"));
            }
            let password = password(password_stdin, true)?;
            file.set_password(&name, &password)
                .map_err(|e| e.to_string())?;
            format!("new password for {name}; its console sessions end\n")
        }
        UsersCommand::Remove { name } => {
            file.remove_user(&name).map_err(|e| e.to_string())?;
            format!("removed {name}\n")
        }
        UsersCommand::Token(TokenCommand::Add { name, role }) => {
            let token = file.add_token(&name, role).map_err(|e| e.to_string())?;
            format!(
                "{token}\n(token {name}, {}: shown only now; send it as Authorization: Bearer)\n",
                role.as_str()
            )
        }
        UsersCommand::Token(TokenCommand::Remove { name }) => {
            file.remove_token(&name).map_err(|e| e.to_string())?;
            format!("removed token {name}\n")
        }
    };
    file.save(&dir).map_err(|e| e.to_string())?;
    Ok(out)
}

fn list(file: &UsersFile) -> String {
    let mut out = String::new();
    for u in &file.users {
        out.push_str(&format!("user   {:<24} {}\n", u.name, u.role.as_str()));
    }
    for t in &file.tokens {
        out.push_str(&format!("token  {:<24} {}\n", t.name, t.role.as_str()));
    }
    if out.is_empty() {
        out.push_str("no accounts and no tokens\n");
    }
    out
}

/// The password: the first line of stdin, or typed twice at a prompt without echo.
fn password(from_stdin: bool, confirm: bool) -> Result<String, String> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = prompt("Password: ")?;
    if confirm && prompt("Again: ")? != first {
        return Err("the two passwords differ".to_owned());
    }
    Ok(first)
}

/// One line from the terminal with echo off (`stty -echo`, restored after).
fn prompt(what: &str) -> Result<String, String> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprint!("{what}");
    let _ = std::io::stderr().flush();
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
    }
    eprintln!();
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
