//! A stopped sampling continues where it stood: images drawn in two calls — the first stopped
//! after a batch, the second continuing from the progress that batch reported — are the ones an
//! uninterrupted call draws, bit for bit, with a stochastic sampler (Euler–Maruyama draws noise
//! at every step, so the random stream's position after each batch matters) and a deterministic
//! one. A progress that is not where a batch ends is refused.
// The batch callbacks return the trainer's error type, as `draw_from` does.
#![allow(clippy::result_large_err)]

mod common;

use common::TINY;
use sparsedm_train::experiment::{DrawSpec, draw, draw_batch, draw_from};
use sparsedm_train::samples::{Images, SampleProgress};
use sparsedm_train::{RunConfig, TrainError, build};
use std::cell::RefCell;

#[test]
fn a_stopped_draw_continues_to_the_uninterrupted_images() {
    let cfg = RunConfig::parse(TINY, "tiny", &[]).unwrap();
    let bundle = build::new_model(&cfg, 3).unwrap();
    bundle.store.set_training(false);
    let schedule = build::schedule(&cfg).unwrap();
    for sampler in ["euler-maruyama", "dpm-solver-2"] {
        // Three batches of 64 and a last one of 8.
        let spec = DrawSpec { n: 200, sampler: sampler.parse().unwrap(), steps: 3, seed: 11, clip_denoised: None };
        assert_eq!(draw_batch(&spec), 64);
        let whole = draw(&bundle, schedule.as_ref(), &spec).unwrap();

        // Stopped after its second batch: the progress of each batch is reported.
        let seen: RefCell<Vec<SampleProgress>> = RefCell::new(Vec::new());
        let stopped = draw_from(
            &bundle,
            schedule.as_ref(),
            &spec,
            None,
            |imgs, p| {
                assert_eq!(imgs.n, 64);
                seen.borrow_mut().push(p);
                Ok(())
            },
            &|| seen.borrow().len() >= 2,
        );
        assert!(matches!(stopped, Err(TrainError::Stopped { done: 128, total: 200 })), "{sampler}: {stopped:?}");
        let at = *seen.borrow().last().unwrap();
        assert_eq!(at.done, 128);

        // Continued from there with the first 128 images (kept by whoever saved the progress).
        let so_far = Images { data: whole.data[..128 * 16 * 16 * 3].to_vec(), n: 128, h: 16, w: 16 };
        let mut later = Vec::new();
        let continued = draw_from(
            &bundle,
            schedule.as_ref(),
            &spec,
            Some((so_far.clone(), at)),
            |imgs, p| {
                later.push((imgs.n, p.done));
                Ok(())
            },
            &|| false,
        )
        .unwrap();
        assert_eq!(later, [(64, 192), (8, 200)], "{sampler}: only the batches after the progress are drawn");
        assert_eq!(continued.data, whole.data, "{sampler}: the continued draw is the uninterrupted one");

        // A progress inside a batch, or images that are not the ones drawn so far, are refused.
        let inside = SampleProgress { done: 100, ..at };
        let short = Images { data: so_far.data[..100 * 16 * 16 * 3].to_vec(), n: 100, h: 16, w: 16 };
        let err = draw_from(&bundle, schedule.as_ref(), &spec, Some((short, inside)), |_, _| Ok(()), &|| false).unwrap_err();
        assert!(err.to_string().contains("cannot continue at image 100 of 200 in batches of 64"), "{err}");
        let err = draw_from(&bundle, schedule.as_ref(), &spec, Some((so_far.first(64), at)), |_, _| Ok(()), &|| false).unwrap_err();
        assert!(err.to_string().contains("needs the 128 images drawn so far"), "{err}");
    }
}
