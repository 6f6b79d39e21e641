//! Query text with `:name` parameters, turned into the driver's own placeholders (`$1` on
//! PostgreSQL, `?` on MySQL and SQLite). Values are always bound, never spliced into the text: a
//! `:name` inside a string literal, a quoted identifier or a comment is text, not a parameter,
//! and `::` is PostgreSQL's cast. Positional placeholders written by hand are refused, so every
//! bound value is one Quire put there.

/// Whose quoting and comment rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// Where a `:name` was written (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

/// Query text ready for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text with the dialect's placeholders in place of the `:name`s.
    pub sql: String,
    /// The parameter bound to each placeholder, in order (`$n` takes the n-th).
    pub slots: Vec<String>,
    /// Every `:name` as written, for checking the names against what a render supplies.
    pub refs: Vec<ParamRef>,
    /// The text as written, and where each placeholder ends in `sql` and in the text (in
    /// characters), to point at the author's text when the database points at `sql`.
    text: Vec<char>,
    marks: Vec<(usize, usize)>,
}

impl Statement {
    /// The line and column in the author's text of character `at` (1-based) of `sql`.
    pub fn text_position(&self, at: usize) -> (usize, usize) {
        let at = at.saturating_sub(1);
        let shifted = self
            .marks
            .iter()
            .rev()
            .find(|(sql_end, _)| *sql_end <= at)
            .map_or(at, |(sql_end, text_end)| at - sql_end + text_end);
        position(&self.text, shifted.min(self.text.len()))
    }
}

/// Why a query's text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct TextError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Turns `text` into a [`Statement`] for `dialect`.
pub fn parse(text: &str, dialect: Dialect) -> Result<Statement, TextError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Statement {
        sql: String::with_capacity(text.len()),
        slots: Vec::new(),
        refs: Vec::new(),
        text: Vec::new(),
        marks: Vec::new(),
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let skip = match c {
            '\'' => Some(quoted(
                &chars,
                i,
                '\'',
                backslash_escapes(&chars, i, dialect),
            )),
            '"' => Some(quoted(&chars, i, '"', dialect == Dialect::Mysql)),
            '`' if dialect != Dialect::Postgres => Some(quoted(&chars, i, '`', false)),
            '-' if next == Some('-') => Some(line_end(&chars, i)),
            '#' if dialect == Dialect::Mysql => Some(line_end(&chars, i)),
            '/' if next == Some('*') => Some(block_comment(&chars, i, dialect)),
            '$' if dialect == Dialect::Postgres => dollar_quote(&chars, i),
            _ => None,
        };
        if let Some(end) = skip {
            out.sql.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if c == ':' && next == Some(':') {
            out.sql.push_str("::");
            i += 2;
            continue;
        }
        if c == ':' && next.is_some_and(is_name_start) {
            let end = (i + 1..chars.len())
                .find(|&j| !is_name_char(chars[j]))
                .unwrap_or(chars.len());
            let name: String = chars[i + 1..end].iter().collect();
            let (line, column) = position(&chars, i);
            push_placeholder(&mut out, &name, dialect);
            out.marks.push((out.sql.chars().count(), end));
            out.refs.push(ParamRef { name, line, column });
            i = end;
            continue;
        }
        if is_positional(&chars, i, dialect) {
            let (line, column) = position(&chars, i);
            return Err(TextError {
                line,
                column,
                message: format!(
                    "write parameters as :name; '{c}' placeholders are Quire's to place"
                ),
            });
        }
        out.sql.push(c);
        i += 1;
    }
    out.text = chars;
    Ok(out)
}

fn push_placeholder(out: &mut Statement, name: &str, dialect: Dialect) {
    match dialect {
        Dialect::Postgres => {
            let n = match out.slots.iter().position(|s| s == name) {
                Some(k) => k + 1,
                None => {
                    out.slots.push(name.to_owned());
                    out.slots.len()
                }
            };
            out.sql.push_str(&format!("${n}"));
        }
        Dialect::Mysql | Dialect::Sqlite => {
            out.slots.push(name.to_owned());
            out.sql.push('?');
        }
    }
}

/// `?` outside quotes (MySQL, SQLite) and `$1` (PostgreSQL) are the drivers' placeholders.
fn is_positional(chars: &[char], i: usize, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Postgres => {
            chars[i] == '$'
                && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                && (i == 0 || !is_name_char(chars[i - 1]))
        }
        Dialect::Mysql | Dialect::Sqlite => chars[i] == '?',
    }
}

/// MySQL strings take backslash escapes; PostgreSQL's only when written `E'…'`.
fn backslash_escapes(chars: &[char], i: usize, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Mysql => true,
        Dialect::Postgres => {
            i > 0 && matches!(chars[i - 1], 'E' | 'e') && (i == 1 || !is_name_char(chars[i - 2]))
        }
        Dialect::Sqlite => false,
    }
}

/// The end (exclusive) of a quoted run starting at `start`; a doubled quote is an escaped one.
fn quoted(chars: &[char], start: usize, quote: char, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if backslash => i += 2,
            c if c == quote && chars.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

fn line_end(chars: &[char], start: usize) -> usize {
    (start..chars.len())
        .find(|&j| chars[j] == '\n')
        .unwrap_or(chars.len())
}

/// `/* … */`; PostgreSQL nests them.
fn block_comment(chars: &[char], start: usize, dialect: Dialect) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth = if dialect == Dialect::Postgres || depth == 0 {
                depth + 1
            } else {
                depth
            };
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

/// PostgreSQL's `$tag$ … $tag$` strings; `None` when `$` does not open one.
fn dollar_quote(chars: &[char], start: usize) -> Option<usize> {
    if start > 0 && is_name_char(chars[start - 1]) {
        return None;
    }
    let close = (start + 1..chars.len()).find(|&j| chars[j] == '$')?;
    let tag = &chars[start..=close];
    if !tag[1..tag.len() - 1].iter().enumerate().all(|(k, &c)| {
        if k == 0 {
            is_name_start(c)
        } else {
            is_name_char(c)
        }
    }) {
        return None;
    }
    let body = close + 1;
    let end = (body..chars.len())
        .find(|&j| chars[j..].starts_with(tag))
        .map_or(chars.len(), |j| j + tag.len());
    Some(end)
}

pub(super) fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn position(chars: &[char], at: usize) -> (usize, usize) {
    let before = &chars[..at];
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let column = at - before.iter().rposition(|&c| c == '\n').map_or(0, |p| p + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &Statement) -> Vec<&str> {
        s.refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn parameters_become_placeholders_and_repeat_on_postgres() {
        let s = parse(
            "select * from t where a = :id and b > :from or c = :id",
            Dialect::Postgres,
        )
        .unwrap();
        assert_eq!(s.sql, "select * from t where a = $1 and b > $2 or c = $1");
        assert_eq!(s.slots, ["id", "from"]);
        let s = parse("select :a, :b, :a", Dialect::Mysql).unwrap();
        assert_eq!(s.sql, "select ?, ?, ?");
        assert_eq!(s.slots, ["a", "b", "a"]);
    }

    #[test]
    fn quoted_text_comments_and_casts_are_not_parameters() {
        let text =
            "select ':a', \"x:b\", $$ :c $$, $t$ :d $t$, :e::date -- :f\n/* :g /* :h */ */ from t";
        let s = parse(text, Dialect::Postgres).unwrap();
        assert_eq!(names(&s), ["e"]);
        assert_eq!(
            s.sql,
            "select ':a', \"x:b\", $$ :c $$, $t$ :d $t$, $1::date -- :f\n/* :g /* :h */ */ from t"
        );
        let s = parse("select 'it''s :a', `:b` # :c\n, :d", Dialect::Mysql).unwrap();
        assert_eq!(names(&s), ["d"]);
        let s = parse(r"select 'it\'s :a', :b", Dialect::Mysql).unwrap();
        assert_eq!(names(&s), ["b"]);
        let s = parse(r"select E'x\':a', :b", Dialect::Postgres).unwrap();
        assert_eq!(names(&s), ["b"]);
        let s = parse("select arr[1:2], :b", Dialect::Postgres).unwrap();
        assert_eq!(names(&s), ["b"]);
    }

    #[test]
    fn positions_are_lines_and_columns() {
        let s = parse("select 1\n  where x = :who", Dialect::Sqlite).unwrap();
        assert_eq!(
            s.refs,
            [ParamRef {
                name: "who".into(),
                line: 2,
                column: 13
            }]
        );
    }

    #[test]
    fn database_positions_point_into_the_authors_text() {
        let s = parse("select :long_name,\n  frm t", Dialect::Postgres).unwrap();
        // "select $1,\n  frm t": the database points at "frm", character 14.
        assert_eq!(s.text_position(14), (2, 3));
        assert_eq!(s.text_position(1), (1, 1));
    }

    #[test]
    fn hand_written_placeholders_are_refused() {
        let e = parse("select * from t where a = ?", Dialect::Sqlite).unwrap_err();
        assert_eq!((e.line, e.column), (1, 27));
        assert!(parse("select $1", Dialect::Postgres).is_err());
        // Inside a string they are text.
        assert!(parse("select '?', '$1'", Dialect::Mysql).is_ok());
        assert!(parse("select 'a?', x$1", Dialect::Postgres).is_ok());
    }
}
