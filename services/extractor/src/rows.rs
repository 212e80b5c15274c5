//! Row counts of a MariaDB dump, read from the dump text as it streams past.
//! mariadb-dump's own transaction cannot be shared, so counting from a second
//! connection could disagree with the dump under concurrent writes; counting
//! the rows the dump actually holds cannot.
//!
//! Each table appears as `CREATE TABLE \`name\`` (so empty tables count 0)
//! and its rows as `INSERT INTO \`name\` VALUES (…),(…);`, on one line or
//! with a tuple per line. A row is a
//! parenthesised tuple at depth 0; strings are single-quoted with backslash
//! escapes, and `--hex-blob` keeps binary columns out of strings.

use std::collections::BTreeMap;
use vaultline_format::manifest::TableRows;

/// Lines longer than this before their `VALUES` are not ours to parse.
const PREFIX_LIMIT: usize = 64 << 10;

#[derive(Default)]
enum State {
    /// At the start of a line, collecting its first bytes.
    #[default]
    Prefix,
    /// Skipping to the end of the line.
    Skip,
    /// Inside an INSERT's values.
    Values {
        table: String,
        depth: u32,
        in_string: bool,
        escape: bool,
    },
}

/// Feeds on dump bytes; [`SqlRowCounter::finish`] gives the counts.
#[derive(Default)]
pub(crate) struct SqlRowCounter {
    state: State,
    line: Vec<u8>,
    tables: BTreeMap<String, u64>,
}

const CREATE: &[u8] = b"CREATE TABLE `";
const INSERT: &[u8] = b"INSERT INTO `";
/// Followed by a space (MySQL) or a newline and one tuple per line (MariaDB 10.11+).
const VALUES: &[u8] = b" VALUES";

impl SqlRowCounter {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match &mut self.state {
            State::Skip => {
                if b == b'\n' {
                    self.state = State::Prefix;
                }
            }
            State::Values {
                table,
                depth,
                in_string,
                escape,
            } => {
                if *in_string {
                    if *escape {
                        *escape = false;
                    } else if b == b'\\' {
                        *escape = true;
                    } else if b == b'\'' {
                        *in_string = false;
                    }
                    return;
                }
                match b {
                    b'\'' => *in_string = true,
                    b'(' => {
                        if *depth == 0
                            && let Some(rows) = self.tables.get_mut(table.as_str())
                        {
                            *rows += 1;
                        }
                        *depth += 1;
                    }
                    b')' => *depth = depth.saturating_sub(1),
                    b';' if *depth == 0 => self.state = State::Skip,
                    _ => {}
                }
            }
            State::Prefix => {
                if b == b'\n' {
                    self.line.clear();
                    return;
                }
                self.line.push(b);
                self.parse_prefix();
            }
        }
    }

    /// Decides what the current line is once enough of it is in.
    fn parse_prefix(&mut self) {
        let line = &self.line;
        let could_be = |pattern: &[u8]| {
            let n = line.len().min(pattern.len());
            line[..n] == pattern[..n]
        };
        if !could_be(CREATE) && !could_be(INSERT) || line.len() > PREFIX_LIMIT {
            self.line.clear();
            self.state = State::Skip;
            return;
        }
        if line.starts_with(CREATE) {
            if let Some((name, _)) = quoted_name(&line[CREATE.len()..]) {
                self.tables.entry(name).or_default();
                self.line.clear();
                self.state = State::Skip;
            }
        } else if line.starts_with(INSERT)
            && let Some((name, rest)) = quoted_name(&line[INSERT.len()..])
            && rest.ends_with(VALUES)
        {
            self.tables.entry(name.clone()).or_default();
            self.line.clear();
            self.state = State::Values {
                table: name,
                depth: 0,
                in_string: false,
                escape: false,
            };
        }
    }

    pub(crate) fn finish(self) -> Vec<TableRows> {
        self.tables
            .into_iter()
            .map(|(name, rows)| TableRows { name, rows })
            .collect()
    }
}

/// A backquoted name (`` `` `` stands for one backquote) and what follows it.
fn quoted_name(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut name = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            if bytes.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            // Not yet sure it is not a doubled backquote: wait for one more byte.
            bytes.get(i + 1)?;
            return Some((String::from_utf8_lossy(&name).into_owned(), &bytes[i + 1..]));
        }
        name.push(bytes[i]);
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_from_dump_text_fed_in_any_pieces() {
        let dump = b"-- comment with INSERT INTO `x` VALUES (1);\n\
CREATE TABLE `t``1` (\n  `id` int\n);\n\
CREATE TABLE `empty` (\n  `id` int\n);\n\
INSERT INTO `t``1` VALUES (1,'a (b)'),(2,'it\\'s ); (x'),(3,0x28),(4,'''('),(5,NULL);\n\
INSERT INTO `t``1` VALUES (6,'x');\n\
INSERT INTO `other` (`a`, `b`) VALUES (1,2),(3,4);\n\
INSERT INTO `other` VALUES\n(5,'x\\n('),\n(6,'y');\n\
/*!40000 ALTER TABLE `t1` ENABLE KEYS */;\n";
        for piece in [1, 3, 7, dump.len()] {
            let mut counter = SqlRowCounter::default();
            for part in dump.chunks(piece) {
                counter.feed(part);
            }
            let counts: Vec<(String, u64)> = counter
                .finish()
                .into_iter()
                .map(|t| (t.name, t.rows))
                .collect();
            assert_eq!(
                counts,
                vec![
                    ("empty".to_owned(), 0),
                    ("other".to_owned(), 4),
                    ("t`1".to_owned(), 6)
                ],
                "pieces of {piece}"
            );
        }
    }
}
