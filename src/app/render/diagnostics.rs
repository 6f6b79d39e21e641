//! Typst diagnostics turned into what a report author needs: message, file, line, column, hints.

use serde::{Deserialize, Serialize};
use typst::World;
use typst::WorldExt;
use typst::diag::{Severity, SourceDiagnostic};

use super::world::ReportWorld;

/// One compiler message, positions 1-based.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: DiagnosticSeverity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticSeverity {
    Error,
    Warning,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
            if let (Some(l), Some(c)) = (self.line, self.column) {
                write!(f, "{l}:{c}:")?;
            }
            f.write_str(" ")?;
        }
        let sev = match self.severity {
            DiagnosticSeverity::Error => "error",
            DiagnosticSeverity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.message)?;
        for h in &self.hints {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Converts Typst's diagnostics, resolving spans to positions in the template's files.
pub fn convert(world: &ReportWorld<'_>, diags: &[SourceDiagnostic]) -> Vec<Diagnostic> {
    diags.iter().map(|d| one(world, d)).collect()
}

fn one(world: &ReportWorld<'_>, d: &SourceDiagnostic) -> Diagnostic {
    let severity = match d.severity {
        Severity::Error => DiagnosticSeverity::Error,
        Severity::Warning => DiagnosticSeverity::Warning,
    };
    let mut diag = Diagnostic {
        severity,
        message: d.message.to_string(),
        file: None,
        line: None,
        column: None,
        hints: d.hints.iter().map(|h| h.v.to_string()).collect(),
    };
    if let Some(id) = d.span.id() {
        diag.file = Some(ReportWorld::path_of(id));
        if let (Some(range), Ok(source)) = (world.range(d.span), world.source(id))
            && let Some((line, col)) = source.lines().byte_to_line_column(range.start)
        {
            diag.line = Some(line + 1);
            diag.column = Some(col + 1);
        }
    }
    diag
}
