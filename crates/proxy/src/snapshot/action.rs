//! What a matched rule (or a listener's default) does, prepared once per snapshot.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use trellis_config as config;
use trellis_targets::SmoothSchedule;

use super::redirect::Redirect;

pub enum Action {
    Forward(Forward),
    Fixed(Fixed),
    Redirect(Redirect),
}

/// A weighted split over target groups; the group for each request comes from a smooth schedule.
pub struct Forward {
    to: Box<[ForwardTo]>,
    schedule: SmoothSchedule,
}

pub struct ForwardTo {
    /// The group's slot in the snapshot (see [`super::GroupSlots`]).
    pub slot: usize,
    /// `x-trellis-target: service=…;target-group=…`, built once.
    pub target_header: HeaderValue,
}

impl Forward {
    /// The group for this request; `None` when every weight is 0.
    #[inline]
    pub fn pick(&self) -> Option<&ForwardTo> {
        self.schedule.next().map(|i| &self.to[i])
    }
}

pub struct Fixed {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
}

impl Action {
    pub fn build(
        action: &config::Action,
        service: &str,
        groups: &dyn Fn(&str) -> Option<usize>,
    ) -> Self {
        match action {
            config::Action::Forward(list) => {
                // Built in one pass so each destination keeps its own weight, whatever is skipped.
                let (to, weights): (Vec<ForwardTo>, Vec<u16>) = list
                    .iter()
                    .filter_map(|w| {
                        let slot = groups(&w.target_group)?;
                        let header = format!("service={service};target-group={}", w.target_group);
                        let target_header =
                            HeaderValue::from_str(&header).unwrap_or(HeaderValue::from_static(""));
                        Some((
                            ForwardTo {
                                slot,
                                target_header,
                            },
                            w.weight,
                        ))
                    })
                    .unzip();
                Action::Forward(Forward {
                    schedule: SmoothSchedule::new(&weights),
                    to: to.into_boxed_slice(),
                })
            }
            config::Action::FixedResponse(f) => {
                let content_type = match (&f.content_type, &f.body) {
                    (Some(ct), _) => HeaderValue::from_str(ct).ok(),
                    (None, Some(_)) => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
                    (None, None) => None,
                };
                Action::Fixed(Fixed {
                    status: StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK),
                    body: Bytes::from(f.body.clone().unwrap_or_default()),
                    content_type,
                })
            }
            config::Action::Redirect(r) => Action::Redirect(Redirect::build(r)),
        }
    }
}
