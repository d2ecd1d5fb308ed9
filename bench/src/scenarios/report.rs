//! The report the scenarios fill: figures, ratios, targets, as a table and JSON.

use serde_json::{Value, json};

/// One measured figure, with its baseline ratio and target where it has them.
#[derive(Debug, Clone)]
pub(super) struct Figure {
    pub(super) scenario: &'static str,
    pub(super) measure: String,
    pub(super) value: f64,
    pub(super) unit: &'static str,
    pub(super) ratio: Option<(f64, &'static str)>,
    pub(super) target: Option<(String, bool)>,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(super) machine: String,
    pub(super) quick: bool,
    pub(super) figures: Vec<Figure>,
}

impl Report {
    pub(super) fn add(
        &mut self,
        scenario: &'static str,
        measure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> &mut Figure {
        self.figures.push(Figure {
            scenario,
            measure: measure.into(),
            value,
            unit,
            ratio: None,
            target: None,
        });
        let last = self.figures.len() - 1;
        &mut self.figures[last]
    }

    pub(crate) fn table(&self) -> String {
        let mut rows = vec![[
            "scenario".to_owned(),
            "measure".to_owned(),
            "value".to_owned(),
            "ratio".to_owned(),
            "target".to_owned(),
        ]];
        for f in &self.figures {
            rows.push([
                f.scenario.to_owned(),
                f.measure.clone(),
                format!("{} {}", format_value(f.value), f.unit),
                f.ratio
                    .map_or_else(String::new, |(r, of)| format!("{r:.2}x {of}")),
                f.target.as_ref().map_or_else(String::new, |(t, met)| {
                    format!("{t} {}", if *met { "met" } else { "MISSED" })
                }),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "machine: {}{}\n",
            self.machine,
            if self.quick {
                " (quick run: sizes too small for the targets)"
            } else {
                ""
            }
        );
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "machine": self.machine,
            "quick": self.quick,
            "figures": self.figures.iter().map(|f| json!({
                "scenario": f.scenario,
                "measure": f.measure,
                "value": f.value,
                "unit": f.unit,
                "ratio": f.ratio.map(|(r, _)| r),
                "ratio_of": f.ratio.map(|(_, of)| of),
                "target": f.target.as_ref().map(|(t, _)| t),
                "target_met": f.target.as_ref().map(|(_, met)| met),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Figure {
    pub(super) fn ratio(&mut self, ratio: f64, of: &'static str) -> &mut Self {
        self.ratio = Some((ratio, of));
        self
    }

    pub(super) fn target(&mut self, target: impl Into<String>, met: bool) -> &mut Self {
        self.target = Some((target.into(), met));
        self
    }
}

pub(super) fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
