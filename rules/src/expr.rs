//! The rule language: tokens, syntax tree and a recursive-descent parser.
//!
//! Grammar, loosest binding first:
//! ```text
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | compare
//! compare := sum (("=="|"!="|"<"|"<="|">"|">=") sum | "not"? "in" sum)?
//! sum     := product (("+"|"-") product)*
//! product := unary (("*"|"/") unary)*
//! unary   := "-" unary | primary
//! primary := number | duration | time | string | true | false | name | call
//!          | "(" or ")" | "[" (or ("," or)*)? "]"
//! ```
//! Numbers may carry a unit that is only there to be read (`95%`, `1500W`, `2kW` = 2000,
//! `12.5V`, `3A`); durations are `30s`, `20m`, `2h`, `1d`, `1h30m`; times of day `17:30`.

use std::fmt;

/// Byte range inside one expression's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn join(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Number(f64),
    /// Seconds.
    Duration(f64),
    /// Seconds since local midnight.
    TimeOfDay(f64),
    Str(String),
    Bool(bool),
    List(Vec<Expr>),
    /// A dotted value name, such as `bmv.state_of_charge` or `hour`.
    Name(String),
    /// A helper call; `site` numbers the call inside its rule so that helpers with memory
    /// (`stable_for`, `hold`) keep one memory per place they are written.
    Call {
        name: String,
        args: Vec<Expr>,
        site: usize,
    },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// The operator that is true exactly when this one is false (for explaining a false
    /// comparison as the fact that holds: `soc 93.5 % < 95 %`).
    pub fn negated(self) -> Option<BinOp> {
        Some(match self {
            BinOp::Eq => BinOp::Ne,
            BinOp::Ne => BinOp::Eq,
            BinOp::Lt => BinOp::Ge,
            BinOp::Le => BinOp::Gt,
            BinOp::Gt => BinOp::Le,
            BinOp::Ge => BinOp::Lt,
            BinOp::In => BinOp::NotIn,
            BinOp::NotIn => BinOp::In,
            _ => return None,
        })
    }
}

/// A syntax error, with the place in the expression's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Number(f64),
    Duration(f64),
    TimeOfDay(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Number(n) => write!(f, "number {n}"),
            Tok::Duration(_) => write!(f, "a duration"),
            Tok::TimeOfDay(_) => write!(f, "a time of day"),
            Tok::Str(s) => write!(f, "string \"{s}\""),
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Op(s) => write!(f, "`{s}`"),
            Tok::End => write!(f, "the end of the condition"),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, Span)>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |start: usize, end: usize, message: String| ParseError {
        span: Span { start, end },
        message,
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'#' {
            // A comment runs to the end of the line (useful in multi-line TOML strings).
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let tok = lex_number(src, &mut i).map_err(|m| err(start, i.max(start + 1), m))?;
            out.push((tok, Span { start, end: i }));
            continue;
        }
        if c == b'"' || c == b'\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match src[i..].chars().next() {
                    None => {
                        return Err(err(
                            start,
                            src.len(),
                            "this string has no closing quote".into(),
                        ));
                    }
                    Some(ch) if ch as u32 == c as u32 => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push((Tok::Str(s), Span { start, end: i }));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            let word = &src[start..i];
            if word.ends_with('.') || word.contains("..") {
                return Err(err(
                    start,
                    i,
                    format!("`{word}` is not a valid name: a dot must be followed by a name"),
                ));
            }
            out.push((Tok::Ident(word.to_string()), Span { start, end: i }));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let op: &'static str = match two {
            "==" => "==",
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            "&&" => return Err(err(i, i + 2, "write `and` instead of `&&`".into())),
            "||" => return Err(err(i, i + 2, "write `or` instead of `||`".into())),
            _ => match c {
                b'<' => "<",
                b'>' => ">",
                b'+' => "+",
                b'-' => "-",
                b'*' => "*",
                b'/' => "/",
                b'(' => "(",
                b')' => ")",
                b'[' => "[",
                b']' => "]",
                b',' => ",",
                b'=' => {
                    return Err(err(
                        i,
                        i + 1,
                        "use `==` to compare (a single `=` assigns nothing here)".into(),
                    ));
                }
                b'!' => return Err(err(i, i + 1, "write `not` instead of `!`".into())),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(
                        i,
                        i + ch.len_utf8(),
                        format!("unexpected character `{ch}`"),
                    ));
                }
            },
        };
        i += op.len();
        out.push((Tok::Op(op), Span { start, end: i }));
    }
    out.push((
        Tok::End,
        Span {
            start: src.len(),
            end: src.len(),
        },
    ));
    Ok(out)
}

fn lex_number(src: &str, i: &mut usize) -> Result<Tok, String> {
    let bytes = src.as_bytes();
    let start = *i;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i].is_ascii_digit() || bytes[*i] == b'.') {
            *i += 1;
        }
    };
    digits(i);
    let first = &src[start..*i];
    // A time of day: 17:30 or 7:05.
    if bytes.get(*i) == Some(&b':') {
        *i += 1;
        let m_start = *i;
        digits(i);
        let (h, m) = (first.parse::<u32>(), src[m_start..*i].parse::<u32>());
        return match (h, m) {
            (Ok(h), Ok(m)) if h < 24 && m < 60 && *i - m_start == 2 => {
                Ok(Tok::TimeOfDay(f64::from(h * 3600 + m * 60)))
            }
            _ => Err(format!(
                "`{}` is not a time of day (write it as HH:MM, 00:00 to 23:59)",
                &src[start..*i]
            )),
        };
    }
    let value: f64 = first
        .parse()
        .map_err(|_| format!("`{first}` is not a number"))?;
    let unit_start = *i;
    while *i < bytes.len() && (bytes[*i].is_ascii_alphabetic() || bytes[*i] == b'%') {
        *i += 1;
    }
    let unit = &src[unit_start..*i];
    match unit {
        "" | "%" | "W" | "V" | "A" | "Wh" => Ok(Tok::Number(value)),
        "kW" | "kWh" => Ok(Tok::Number(value * 1000.0)),
        "s" | "m" | "h" | "d" => Ok(Tok::Duration(value * unit_seconds(unit))),
        _ => Err(bad_unit(&src[start..*i])),
    }
    .and_then(|tok| {
        if let Tok::Duration(d) = tok
            && bytes.get(*i).is_some_and(u8::is_ascii_digit)
        {
            // 1h30m: the unit loop stopped before "30m".
            let more = lex_number(src, i)?;
            return match more {
                Tok::Duration(d2) => Ok(Tok::Duration(d + d2)),
                _ => Err(bad_unit(&src[start..*i])),
            };
        }
        Ok(tok)
    })
}

fn bad_unit(text: &str) -> String {
    format!(
        "`{text}` has an unknown unit: durations use s, m, h, d (e.g. 20m, 1h30m); numbers may end in %, W, kW, V, A, Wh, kWh"
    )
}

fn unit_seconds(unit: &str) -> f64 {
    match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => 86400.0,
    }
}

/// Parses one condition. `first_site` numbers its helper calls (see [`ExprKind::Call`]);
/// the returned number is the next free one.
pub fn parse(src: &str, first_site: usize) -> Result<(Expr, usize), ParseError> {
    let toks = lex(src)?;
    // Bounded size and nesting: evaluation recurses over the tree, and a condition is
    // written by a person, so these limits are far beyond any real one.
    if toks.len() > MAX_TOKENS {
        let span = toks[MAX_TOKENS].1;
        return Err(ParseError {
            span,
            message: format!(
                "this condition is too long (more than {MAX_TOKENS} words and signs): split it"
            ),
        });
    }
    let mut p = Parser {
        toks,
        pos: 0,
        site: first_site,
        depth: 0,
    };
    let e = p.or()?;
    let (tok, span) = p.peek();
    if *tok != Tok::End {
        return Err(ParseError {
            span,
            message: format!("expected `and`, `or` or the end of the condition, found {tok}"),
        });
    }
    Ok((e, p.site))
}

const MAX_TOKENS: usize = 1000;
const MAX_DEPTH: usize = 48;

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    site: usize,
    /// Nesting of parentheses, lists, calls, `not` and `-`.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> (&Tok, Span) {
        let (t, s) = &self.toks[self.pos];
        (t, *s)
    }

    fn bump(&mut self) -> (Tok, Span) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek().0, Tok::Ident(s) if s == w)
    }

    fn is_op(&self, o: &str) -> bool {
        matches!(self.peek().0, Tok::Op(s) if *s == o)
    }

    fn expect_op(&mut self, o: &str, context: &str) -> Result<Span, ParseError> {
        if self.is_op(o) {
            return Ok(self.bump().1);
        }
        let (tok, span) = self.peek();
        Err(ParseError {
            span,
            message: format!("expected `{o}` {context}, found {tok}"),
        })
    }

    fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
        let span = lhs.span.join(rhs.span);
        Expr {
            kind: ExprKind::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            let span = self.peek().1;
            return Err(ParseError {
                span,
                message: format!("nested more than {MAX_DEPTH} deep: simplify this condition"),
            });
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.nested(Self::or_flat)
    }

    fn or_flat(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.and()?;
        while self.is_word("or") {
            self.bump();
            let rhs = self.and()?;
            lhs = Self::binary(BinOp::Or, lhs, rhs);
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.not()?;
        while self.is_word("and") {
            self.bump();
            let rhs = self.not()?;
            lhs = Self::binary(BinOp::And, lhs, rhs);
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.is_word("not") {
            let (_, span) = self.bump();
            let inner = self.not()?;
            let span = span.join(inner.span);
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                span,
            });
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.sum()?;
        let op = match self.peek().0 {
            Tok::Op("==") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Ident(w) if w == "in" => BinOp::In,
            Tok::Ident(w)
                if w == "not"
                    && matches!(&self.toks[self.pos + 1].0, Tok::Ident(x) if x == "in") =>
            {
                self.bump();
                BinOp::NotIn
            }
            _ => return Ok(lhs),
        };
        self.bump();
        let rhs = self.sum()?;
        if let Tok::Op(o @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) = self.peek().0 {
            let span = self.peek().1;
            return Err(ParseError {
                span,
                message: format!("comparisons do not chain: write `a < b and b {o} c`"),
            });
        }
        Ok(Self::binary(op, lhs, rhs))
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.product()?;
        loop {
            let op = match self.peek().0 {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.product()?;
            lhs = Self::binary(op, lhs, rhs);
        }
    }

    fn product(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek().0 {
                Tok::Op("*") => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = Self::binary(op, lhs, rhs);
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_op("-") {
            let (_, span) = self.bump();
            let inner = self.unary()?;
            let span = span.join(inner.span);
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(inner)),
                span,
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (tok, span) = self.bump();
        let kind = match tok {
            Tok::Number(n) => ExprKind::Number(n),
            Tok::Duration(d) => ExprKind::Duration(d),
            Tok::TimeOfDay(t) => ExprKind::TimeOfDay(t),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Op("(") => {
                let inner = self.or()?;
                let close = self.expect_op(")", "to close the `(`")?;
                return Ok(Expr {
                    kind: inner.kind,
                    span: span.join(close),
                });
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.is_op("]") {
                    loop {
                        items.push(self.or()?);
                        if self.is_op(",") {
                            self.bump();
                            continue;
                        }
                        break;
                    }
                }
                let close = self.expect_op("]", "to close the list")?;
                return Ok(Expr {
                    kind: ExprKind::List(items),
                    span: span.join(close),
                });
            }
            Tok::Ident(w) if w == "true" => ExprKind::Bool(true),
            Tok::Ident(w) if w == "false" => ExprKind::Bool(false),
            Tok::Ident(w) if matches!(w.as_str(), "and" | "or" | "not" | "in") => {
                return Err(ParseError {
                    span,
                    message: format!("expected a value before `{w}`"),
                });
            }
            Tok::Ident(w) => {
                if self.is_op("(") {
                    self.bump();
                    let mut args = Vec::new();
                    if !self.is_op(")") {
                        loop {
                            args.push(self.or()?);
                            if self.is_op(",") {
                                self.bump();
                                continue;
                            }
                            break;
                        }
                    }
                    let close = self.expect_op(")", &format!("to close the call to `{w}`"))?;
                    let site = self.site;
                    self.site += 1;
                    return Ok(Expr {
                        kind: ExprKind::Call {
                            name: w,
                            args,
                            site,
                        },
                        span: span.join(close),
                    });
                }
                ExprKind::Name(w)
            }
            other => {
                return Err(ParseError {
                    span,
                    message: format!(
                        "expected a value (a name, number, duration, time, string or `(`), found {other}"
                    ),
                });
            }
        };
        Ok(Expr { kind, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expr {
        parse(s, 0).unwrap_or_else(|e| panic!("{s}: {e}")).0
    }

    #[test]
    fn precedence_and_literals() {
        let e = p("bmv.state_of_charge >= 95% and not x.y or a in [\"float\", 'absorption']");
        let ExprKind::Binary {
            op: BinOp::Or, lhs, ..
        } = e.kind
        else {
            panic!("or at top: {e:?}")
        };
        let ExprKind::Binary {
            op: BinOp::And,
            lhs: cmp,
            rhs: not,
        } = lhs.kind
        else {
            panic!("and under or")
        };
        assert!(matches!(not.kind, ExprKind::Not(_)));
        let ExprKind::Binary {
            op: BinOp::Ge, rhs, ..
        } = cmp.kind
        else {
            panic!("ge")
        };
        assert_eq!(rhs.kind, ExprKind::Number(95.0));
    }

    #[test]
    fn durations_times_units() {
        assert_eq!(p("20m").kind, ExprKind::Duration(1200.0));
        assert_eq!(p("1h30m").kind, ExprKind::Duration(5400.0));
        assert_eq!(p("2h").kind, ExprKind::Duration(7200.0));
        assert_eq!(p("17:30").kind, ExprKind::TimeOfDay(63000.0));
        assert_eq!(p("2kW").kind, ExprKind::Number(2000.0));
        assert!(matches!(
            p("a - -3").kind,
            ExprKind::Binary { op: BinOp::Sub, .. }
        ));
        assert!(matches!(
            p("x not in [1, 2]").kind,
            ExprKind::Binary {
                op: BinOp::NotIn,
                ..
            }
        ));
    }

    #[test]
    fn errors_point_at_the_place() {
        let e = parse("bmv.soc >= 95 and", 0).unwrap_err();
        assert_eq!(e.span.start, 17);
        assert!(e.message.contains("expected a value"), "{}", e.message);
        let e = parse("a = 3", 0).unwrap_err();
        assert_eq!((e.span.start, e.span.end), (2, 3));
        let e = parse("hour > 25:00", 0).unwrap_err();
        assert_eq!(e.span.start, 7);
        let e = parse("(a > 1", 0).unwrap_err();
        assert!(e.message.contains("expected `)`"), "{}", e.message);
        let e = parse("a < b < c", 0).unwrap_err();
        assert!(e.message.contains("do not chain"));
        let e = parse("x > 3 4", 0).unwrap_err();
        assert_eq!(e.span.start, 6);
        let e = parse("x > 3zz", 0).unwrap_err();
        assert!(e.message.contains("unknown unit"), "{}", e.message);
    }

    #[test]
    fn size_and_nesting_are_bounded() {
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        let e = parse(&deep, 0).unwrap_err();
        assert!(e.message.contains("nested more than"), "{}", e.message);
        let long = vec!["a"; 600].join(" + ");
        let e = parse(&long, 0).unwrap_err();
        assert!(e.message.contains("too long"), "{}", e.message);
        assert!(parse(&format!("{}1{}", "(".repeat(40), ")".repeat(40)), 0).is_ok());
        for garbage in [
            "é",
            "\"open",
            "1h30",
            "a..b",
            "25:00",
            "1.2.3",
            "[",
            "not",
            "-",
            "a in",
            "f(,)",
            "x.",
            "#only a comment",
        ] {
            assert!(parse(garbage, 0).is_err(), "{garbage}");
        }
    }

    #[test]
    fn call_sites_are_numbered() {
        let (e, next) = parse("stable_for(a > 1, 5m) and hold(b, 60s)", 3).unwrap();
        assert_eq!(next, 5);
        let ExprKind::Binary { lhs, rhs, .. } = e.kind else {
            panic!()
        };
        assert!(matches!(lhs.kind, ExprKind::Call { site: 3, .. }));
        assert!(matches!(rhs.kind, ExprKind::Call { site: 4, .. }));
    }
}
