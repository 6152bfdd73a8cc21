//! Redis glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*`, `?`, `[abc]`,
//! `[^a-z]`, and `\` to escape. Matching is linear-time backtracking on the last
//! `*`, so no pattern can make it exponential.

#[derive(Debug)]
enum Token {
    Star,
    AnyOne,
    Class { negate: bool, ranges: Vec<(u8, u8)> },
    Literal(u8),
}

fn parse(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
            }
            b'?' => tokens.push(Token::AnyOne),
            b'[' => {
                let mut j = i + 1;
                let negate = pattern.get(j) == Some(&b'^');
                if negate {
                    j += 1;
                }
                let mut ranges = Vec::new();
                while j < pattern.len() && pattern[j] != b']' {
                    let mut c = pattern[j];
                    if c == b'\\' && j + 1 < pattern.len() {
                        j += 1;
                        c = pattern[j];
                    }
                    if pattern.get(j + 1) == Some(&b'-')
                        && j + 2 < pattern.len()
                        && pattern[j + 2] != b']'
                    {
                        let (a, b) = (c, pattern[j + 2]);
                        ranges.push((a.min(b), a.max(b)));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                tokens.push(Token::Class { negate, ranges });
                i = j; // at ']' or past the end (an unclosed class runs to the end)
            }
            b'\\' if i + 1 < pattern.len() => {
                i += 1;
                tokens.push(Token::Literal(pattern[i]));
            }
            c => tokens.push(Token::Literal(c)),
        }
        i += 1;
    }
    tokens
}

fn matches_one(token: &Token, c: u8, nocase: bool) -> bool {
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    match token {
        Token::Star => true,
        Token::AnyOne => true,
        Token::Literal(l) => fold(*l) == fold(c),
        Token::Class { negate, ranges } => {
            let hit = ranges
                .iter()
                .any(|(a, b)| (fold(*a)..=fold(*b)).contains(&fold(c)));
            hit != *negate
        }
    }
}

pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let tokens = parse(pattern);
    let (mut t, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, s));
                t += 1;
            }
            Some(tok) if matches_one(tok, text[s], nocase) => {
                t += 1;
                s += 1;
            }
            _ => match star {
                Some((star_t, star_s)) => {
                    t = star_t + 1;
                    s = star_s + 1;
                    star = Some((star_t, star_s + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("user:*", "user:1", true),
            ("user:*", "users", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            (
                "*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("*:*:*", "a:b:c", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(
                glob_match(p.as_bytes(), t.as_bytes(), false),
                *want,
                "{p} ~ {t}"
            );
        }
        assert!(glob_match(b"APPEND*", b"appendonly", true));
    }
}
