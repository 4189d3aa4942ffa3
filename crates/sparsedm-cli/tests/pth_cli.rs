//! PyTorch checkpoints straight into the CLI: `sparsedm forward` on the
//! tiny conditional U-ViT gives the same output with its weights as a
//! zip-format `.pth` and as a legacy-format `.ckpt` (nested under "model")
//! as with the safetensors weights; `sparsedm convert` writes those weights
//! back bit for bit; a pickle that would run a command is refused in one
//! line and the command does not run.
//!
//! The `.pth`/`.ckpt` files are real `torch.save` output written by
//! `crates/sparsedm-tensor/tests/fixtures/pth/make_pth.py` from
//! `crates/sparsedm-diffusion/tests/fixtures/uvit_tiny_cond.weights.safetensors`.

use sparsedm_tensor::{Tensor, load_safetensors};
use sparsedm_testkit::Scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn diffusion_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-diffusion/tests/fixtures").join(name)
}

fn pth_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sparsedm-tensor/tests/fixtures/pth").join(name)
}

/// This test's own directory, removed when the test passes (kept, and named, when it fails).
fn scratch_dir() -> Scratch {
    Scratch::new("pth-cli")
}

fn sparsedm(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(args).output().expect("run the sparsedm binary")
}

fn forward(weights: &Path, extra: &[&str], out: &Path) -> Output {
    let config = diffusion_fixture("uvit_tiny_cond.json");
    let io = diffusion_fixture("uvit_tiny_cond.io.safetensors");
    let mut args: Vec<&std::ffi::OsStr> = ["forward", "--arch", "uvit", "--config"].iter().map(|s| s.as_ref()).collect();
    args.extend([
        config.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        io.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    sparsedm(&args)
}

fn output_bits(path: &Path) -> (Vec<usize>, Vec<u32>) {
    let t: Vec<(String, Tensor)> = load_safetensors(path).unwrap();
    let out = &t.iter().find(|(k, _)| k == "output").expect("an `output` tensor").1;
    (out.shape().to_vec(), out.to_vec_f32().unwrap().iter().map(|x| x.to_bits()).collect())
}

fn ok(run: &Output, what: &str) {
    assert!(run.status.success(), "{what} failed: {}", String::from_utf8_lossy(&run.stderr));
}

fn one_line_error(run: &Output, what: &str) -> String {
    assert!(!run.status.success(), "{what} must fail");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: one error line, got:\n{stderr}");
    stderr
}

#[test]
fn forward_with_pth_and_legacy_ckpt_equals_safetensors() {
    let scratch = scratch_dir();
    let reference = scratch.join("st.out.safetensors");
    ok(&forward(&diffusion_fixture("uvit_tiny_cond.weights.safetensors"), &[], &reference), "forward (safetensors)");
    let want = output_bits(&reference);
    let zip = scratch.join("pth.out.safetensors");
    ok(&forward(&pth_fixture("uvit_tiny_cond.pth"), &[], &zip), "forward (.pth, zip)");
    assert_eq!(output_bits(&zip), want, "zip .pth output differs");
    // Legacy format, state dict nested under "model": found automatically, and by --key.
    let legacy = scratch.join("ckpt.out.safetensors");
    ok(&forward(&pth_fixture("uvit_tiny_cond.ckpt"), &[], &legacy), "forward (.ckpt, legacy)");
    assert_eq!(output_bits(&legacy), want, "legacy .ckpt output differs");
    let keyed = scratch.join("ckpt-key.out.safetensors");
    ok(&forward(&pth_fixture("uvit_tiny_cond.ckpt"), &["--key", "model"], &keyed), "forward (.ckpt --key model)");
    assert_eq!(output_bits(&keyed), want);
    let e =
        one_line_error(&forward(&pth_fixture("uvit_tiny_cond.ckpt"), &["--key", "ema"], &scratch.join("never.safetensors")), "--key ema");
    assert!(e.contains("no key \"ema\"") && e.contains("model, step"), "{e}");
}

#[test]
fn convert_writes_the_same_tensors_and_protects_the_output() {
    let scratch = scratch_dir();
    let out = scratch.join("converted.safetensors");
    let _ = std::fs::remove_file(&out);
    let run = sparsedm(&["convert".as_ref(), pth_fixture("uvit_tiny_cond.ckpt").as_os_str(), out.as_os_str()]);
    ok(&run, "convert");
    let got = load_safetensors(&out).unwrap();
    let want = load_safetensors(diffusion_fixture("uvit_tiny_cond.weights.safetensors")).unwrap();
    let mut got_names: Vec<&String> = got.iter().map(|(k, _)| k).collect();
    let mut want_names: Vec<&String> = want.iter().map(|(k, _)| k).collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(got_names, want_names);
    for (name, t) in &want {
        let g = &got.iter().find(|(k, _)| k == name).unwrap().1;
        assert_eq!(g.shape(), t.shape(), "{name}");
        assert_eq!(g.dtype(), t.dtype(), "{name}");
        let bits = |x: &Tensor| x.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(g), bits(t), "{name}");
    }
    // An existing output is kept unless --force.
    let before = std::fs::read(&out).unwrap();
    let e = one_line_error(
        &sparsedm(&["convert".as_ref(), pth_fixture("basic_zip.pth").as_os_str(), out.as_os_str()]),
        "convert over an existing file",
    );
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), before, "the existing output was changed");
    ok(&sparsedm(&["convert".as_ref(), pth_fixture("basic_zip.pth").as_os_str(), out.as_os_str(), "--force".as_ref()]), "convert --force");
    assert_eq!(load_safetensors(&out).unwrap().len(), 6);
}

#[test]
fn code_executing_checkpoints_are_refused_by_every_reader() {
    let scratch = scratch_dir();
    let marker = Path::new("/tmp/sparsedm-pickle-pwned");
    let _ = std::fs::remove_file(marker);
    let out = scratch.join("evil.safetensors");
    for file in ["malicious_zip.pth", "malicious_legacy.pth"] {
        let evil = pth_fixture(file);
        let runs = [
            ("convert", sparsedm(&["convert".as_ref(), evil.as_os_str(), out.as_os_str(), "--force".as_ref()])),
            ("inspect", sparsedm(&["inspect".as_ref(), evil.as_os_str()])),
            ("forward", forward(&evil, &[], &out)),
        ];
        for (cmd, run) in runs {
            let e = one_line_error(&run, &format!("{cmd} {file}"));
            assert!(e.contains(file) && e.contains("refused pickle global posix.system"), "{cmd} {file}: {e}");
            assert!(!marker.exists(), "{cmd} {file}: the payload ran");
        }
    }
    assert!(!out.exists(), "nothing is written for a refused checkpoint");
}

#[test]
fn inspect_lists_a_pth_state_dict() {
    let run = sparsedm(&["inspect".as_ref(), pth_fixture("half_zip.pth").as_os_str()]);
    ok(&run, "inspect");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("h ") && text.contains("f16") && text.contains("bf16") && text.contains("3 tensors"), "{text}");
}

/// The commands that take official weights with --arch/--config read a
/// `.pth` as they read its safetensors copy: `sample` draws the same images
/// and `macs --checkpoint` counts the same model (both read the file's
/// metadata first, which a `.pth` does not have).
#[test]
fn sample_and_macs_take_a_pth_with_arch_and_config() {
    let scratch = scratch_dir();
    let config = diffusion_fixture("uvit_tiny_cond.json");
    let model = |weights: &Path| -> Vec<std::ffi::OsString> {
        ["--checkpoint".into(), weights.into(), "--arch".into(), "uvit".into(), "--config".into(), config.clone().into()].into()
    };
    let sample = |weights: &Path, out: &Path| {
        let mut args = vec!["sample".into(), "--device".into(), "cpu".into(), "--force".into(), "--out".into(), out.into()];
        args.extend(["--n", "2", "--steps", "2", "--class", "1"].map(std::ffi::OsString::from));
        args.extend(model(weights));
        Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(&args).output().unwrap()
    };
    let (st, pth) = (diffusion_fixture("uvit_tiny_cond.weights.safetensors"), pth_fixture("uvit_tiny_cond.pth"));
    let (a, b) = (scratch.join("st-samples.npz"), scratch.join("pth-samples.npz"));
    ok(&sample(&st, &a), "sample (safetensors)");
    ok(&sample(&pth, &b), "sample (.pth)");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the .pth's samples differ from the safetensors'");
    let macs = |weights: &Path| {
        let mut args: Vec<std::ffi::OsString> = vec!["macs".into()];
        args.extend(model(weights));
        let run = Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(&args).output().unwrap();
        ok(&run, "macs");
        String::from_utf8_lossy(&run.stdout).lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(macs(&pth), macs(&st));

    // convert --arch/--config: the tensors checked against the model, which the
    // output records, so sample needs no --arch/--config for it.
    let converted = scratch.join("recorded.safetensors");
    let _ = std::fs::remove_file(&converted);
    let convert = |config: &Path| {
        let args: [&std::ffi::OsStr; 7] = [
            "convert".as_ref(),
            pth.as_os_str(),
            converted.as_os_str(),
            "--arch".as_ref(),
            "uvit".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        sparsedm(&args)
    };
    let run = convert(&diffusion_fixture("uvit_tiny_uncond.json"));
    let e = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && e.contains("does not describe") && e.contains("missing tensor in_blocks.1"), "{e}");
    assert!(!converted.exists(), "nothing written for a config that does not fit");
    ok(&convert(&config), "convert --arch --config");
    let c = scratch.join("recorded-samples.npz");
    let mut args: Vec<std::ffi::OsString> =
        ["sample", "--device", "cpu", "--force", "--n", "2", "--steps", "2", "--class", "1"].map(Into::into).into();
    args.extend(["--out".into(), c.clone().into(), "--checkpoint".into(), converted.clone().into()]);
    ok(&Command::new(env!("CARGO_BIN_EXE_sparsedm")).args(&args).output().unwrap(), "sample of the converted file");
    assert_eq!(std::fs::read(&c).unwrap(), std::fs::read(&a).unwrap(), "the converted file's samples differ");
}
