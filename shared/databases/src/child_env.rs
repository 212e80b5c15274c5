//! The environment a child process starts with. A backup worker's own
//! environment holds the KEK, the credentials key, the staging identity,
//! the AWS secret and the catalog URL; pg_dump, a `sh -c` source or a
//! restore command has no business with any of them. So children start
//! from nothing and get back only an allow-list, plus what the caller
//! hands over explicitly (the one secret a source declares).

use std::process::Command;

/// Kept for every child: where programs are, who runs them, the locale.
const KEPT: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// A new command for `program` with a cleared environment and the
/// allow-list. `also` names more variables to keep; an entry ending in `*`
/// keeps every variable with that prefix (`PG*` for a database client a
/// person runs a restore with). Set explicit variables after this call.
pub fn command(program: impl AsRef<std::ffi::OsStr>, also: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for (name, value) in std::env::vars_os() {
        let Some(text) = name.to_str() else {
            continue;
        };
        if kept(text, also) {
            command.env(&name, value);
        }
    }
    command
}

fn kept(name: &str, also: &[&str]) -> bool {
    KEPT.contains(&name)
        || name.starts_with("LC_")
        || also.iter().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *rule == name,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_passes() {
        for name in ["PATH", "HOME", "LC_ALL", "LANG"] {
            assert!(kept(name, &[]), "{name}");
        }
        for name in [
            "VAULTLINE_KEK",
            "VAULTLINE_CATALOG__URL",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "LD_PRELOAD",
        ] {
            assert!(!kept(name, &[]), "{name}");
        }
        assert!(kept("PGPASSWORD", &["PG*"]));
        assert!(kept("MYSQL_PWD", &["MYSQL_PWD"]));
        assert!(!kept("MYSQL_PWD2", &["MYSQL_PWD"]));
    }

    #[test]
    fn a_child_sees_none_of_the_rest() {
        let out = command("/usr/bin/env", &[])
            .env("DECLARED", "1")
            .output()
            .unwrap();
        let seen = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"DECLARED"), "{seen}");
        assert!(
            names.iter().all(|n| kept(n, &[]) || *n == "DECLARED"),
            "{seen}"
        );
    }
}
