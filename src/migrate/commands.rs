//! The ensure scripts as `ExecStart=` lines: shell-like word splitting and systemd quoting.

use super::ImportError;
use super::keys::*;
use super::*;

/// A command line for `ExecStart=` / `ExecStop=`.
pub(super) struct Exec {
    /// The value after `ExecStart=`.
    pub(super) line: String,
    /// Run through `/bin/sh -c`: the command uses shell syntax.
    pub(super) shell: bool,
    /// It had quotes or backslashes, which the unit treats as quoting.
    pub(super) quoted: bool,
    /// The program, if the command runs without a shell.
    pub(super) program: Option<String>,
}

/// Splits a command line into words as the shell would, and says whether it needs a shell:
/// pipes, lists, redirections, expansions (`$`, backquotes), globs, assignments, comments.
pub(super) fn split_words(command: &str) -> Result<(Vec<String>, bool, bool), String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut shell = false;
    let mut quoted = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                quoted = true;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unbalanced single quote".to_owned()),
                    }
                }
            }
            '"' => {
                quoted = true;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => w.push(e),
                            Some('\n') => shell = true,
                            Some(e) => {
                                w.push('\\');
                                w.push(e);
                            }
                            None => return Err("unbalanced double quote".to_owned()),
                        },
                        Some(c @ ('$' | '`')) => {
                            shell = true;
                            w.push(c);
                        }
                        Some(c) => w.push(c),
                        None => return Err("unbalanced double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                quoted = true;
                match chars.next() {
                    Some('\n') | None => shell = true,
                    Some(e) => word.get_or_insert_with(String::new).push(e),
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '*' | '?' | '[' => {
                shell = true;
                word.get_or_insert_with(String::new).push(c);
            }
            '#' | '~' if word.is_none() => {
                shell = true;
                word = Some(c.to_string());
            }
            '=' if words.is_empty()
                && word
                    .as_ref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) =>
            {
                // VAR=value before the program: an assignment.
                shell = true;
                word.get_or_insert_with(String::new).push(c);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok((words, shell, quoted))
}

/// Escapes for systemd's unit-file syntax, inside quotes: `\` and the quote, specifiers
/// (`%` -> `%%`), environment variables (`$` -> `$$`), control characters.
pub(super) fn systemd_escape(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// One argument as systemd should read it back exactly.
pub(super) fn systemd_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/_.,:@+=-".contains(c);
    if word == ";" {
        // A lone `;` separates command lines in ExecStart=; `\;` is the literal.
        "\\;".to_owned()
    } else if !word.is_empty() && word.chars().all(|c| plain(c) || c == '%') {
        word.replace('%', "%%")
    } else {
        format!("\"{}\"", systemd_escape(word, '"'))
    }
}

pub(super) fn exec_line(key: &str, command: &str) -> Result<Exec, ImportError> {
    let bad = |reason: String| ImportError::BadCommand {
        key: show_key(key),
        reason,
    };
    let command = command.trim();
    if command.is_empty() {
        return Err(bad("the command is empty".to_owned()));
    }
    let (words, shell, quoted) = split_words(command).map_err(bad)?;
    if words.is_empty() {
        return Err(bad("the command is empty".to_owned()));
    }
    if shell {
        return Ok(Exec {
            line: format!("/bin/sh -c '{}'", systemd_escape(command, '\'')),
            shell,
            quoted,
            program: None,
        });
    }
    let line: Vec<String> = words.iter().map(|w| systemd_word(w)).collect();
    Ok(Exec {
        line: line.join(" "),
        shell,
        quoted,
        program: words.first().cloned(),
    })
}

/// Warnings about how a command is run now, compared with PROM / HAL, which split it at
/// spaces and ran it without a shell.
pub(super) fn command_warnings(key: &str, exec: &Exec, notes: &mut Vec<String>) {
    let key = show_key(key);
    if exec.shell {
        notes.push(format!(
            "warning: {key} uses shell syntax (pipes, redirections, `&&`, `$`...): the unit runs it \
             with /bin/sh -c. PROM and HAL split commands at spaces and ran them without a shell, \
             so check that it does what you meant"
        ));
    } else if exec.quoted {
        notes.push(format!(
            "warning: {key} has quotes or backslashes: the unit reads them as quoting, as a shell \
             would; PROM and HAL split commands at spaces and passed quotes on literally"
        ));
    }
    if let Some(program) = &exec.program
        && !program.starts_with('/')
    {
        if program.contains('/') {
            notes.push(format!(
                "warning: {key} runs a program by a relative path, which systemd refuses: write \
                 its absolute path in the unit's ExecStart="
            ));
        } else {
            notes.push(format!(
                "warning: {key} runs a program by its name only: systemd looks it up in \
                 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin, not in PROM's PATH; prefer \
                 its absolute path"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_shell_detection() {
        let (w, shell, quoted) = split_words("/opt/a.sh 0 active").unwrap();
        assert_eq!(w, ["/opt/a.sh", "0", "active"]);
        assert!(!shell && !quoted);
        let (w, shell, quoted) = split_words("/opt/a.sh 'two words' \"x y\" a\\ b").unwrap();
        assert_eq!(w, ["/opt/a.sh", "two words", "x y", "a b"]);
        assert!(!shell && quoted);
        for cmd in [
            "a | b",
            "a && b",
            "a > f",
            "a 2>&1",
            "a; b",
            "echo $HOME",
            "echo \"$HOME\"",
            "echo `date`",
            "ls *.log",
            "X=1 a",
            "a # comment",
        ] {
            assert!(split_words(cmd).unwrap().1, "{cmd}");
        }
        // Quoted metacharacters are plain arguments.
        let (w, shell, _) = split_words("/bin/echo '|' \"a>b\" 'x$y'").unwrap();
        assert_eq!(w, ["/bin/echo", "|", "a>b", "x$y"]);
        assert!(!shell);
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a \"b").is_err());
    }

    #[test]
    fn systemd_words() {
        assert_eq!(systemd_word("/opt/a.sh"), "/opt/a.sh");
        assert_eq!(systemd_word("50%"), "50%%");
        assert_eq!(systemd_word("two words"), "\"two words\"");
        assert_eq!(systemd_word("x$y"), "\"x$$y\"");
        assert_eq!(systemd_word("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(systemd_word(""), "\"\"");
        assert_eq!(systemd_word(";"), "\\;");
        assert_eq!(
            systemd_escape("it's $x 100%\n", '\''),
            "it\\'s $$x 100%%\\n"
        );
    }
}
