//! The catalog's data and its TOML extension.

use switchyard_catalog::{Catalog, CatalogError, Precision, SystemKind};

#[test]
fn builtin_has_the_required_systems_and_models() {
    let cat = Catalog::builtin().expect("built-in catalog parses");
    for id in [
        "cs2", "cs3", "a100-sxm", "h100-sxm", "h200", "b200", "b300", "gb200", "gb300", "mi300x",
        "mi325x", "mi355x", "groq-lpu", "sn40l",
    ] {
        assert!(cat.system(id).is_ok(), "system {id} missing");
    }
    for id in [
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.1-405b",
        "deepseek-r1",
        "gpt-oss-120b",
        "kimi-k2.6",
        "glm-4.7",
    ] {
        assert!(cat.model(id).is_ok(), "model {id} missing");
    }
    assert_eq!(cat.models().len(), 33);
}

#[test]
fn every_entry_cites_a_url() {
    let cat = Catalog::builtin().expect("catalog");
    for s in cat.systems() {
        assert!(s.sources.iter().all(|u| u.starts_with("http")), "{}", s.id);
        if let Some(p) = &s.price {
            assert!(
                !p.sources.is_empty() && p.sources.iter().all(|u| u.starts_with("http")),
                "{} price",
                s.id
            );
        }
        if let Some(m) = &s.mesh {
            assert!(!m.sources.is_empty(), "{} mesh", s.id);
        }
    }
    for m in cat.models() {
        assert!(m.sources.iter().all(|u| u.starts_with("http")), "{}", m.id);
    }
    for w in cat.workloads() {
        assert!(
            !w.sources.is_empty() && w.sources.iter().all(|u| u.starts_with("http")),
            "{}",
            w.id
        );
    }
}

#[test]
fn mlperf_workloads_name_catalog_models_and_their_limits() {
    let cat = Catalog::builtin().expect("catalog");
    for model in [
        "llama-2-70b",
        "llama-3.1-405b",
        "mixtral-8x7b",
        "llama-3.1-8b",
        "deepseek-r1",
    ] {
        let w = cat.suite_workload("mlperf", model).expect(model);
        assert!(cat.model(&w.model).is_ok());
        assert!(w.osl.is_some_and(|o| o > 0.0), "{model}");
        assert!(
            w.server_ttft_ms.is_some() && w.server_tpot_ms.is_some(),
            "{model}"
        );
    }
    // The long-context set is an order of magnitude longer than the chat set.
    let long = cat
        .suite_workload("mlperf", "llama-3.1-405b")
        .expect("405b");
    let chat = cat.suite_workload("mlperf", "llama-2-70b").expect("70b");
    assert!(long.isl.expect("isl") > 10.0 * chat.isl.expect("isl"));
    assert!(cat.suite_workload("mlperf", "kimi-k2").is_none());
    assert!(cat.suite_workload("other-suite", "llama-2-70b").is_none());
}

#[test]
fn a_workload_must_name_a_known_model_and_sane_lengths() {
    let mut cat = Catalog::builtin().expect("catalog");
    let unknown = "[[workload]]\nid = \"w\"\nsuite = \"s\"\nmodel = \"nope\"\nisl = 10.0\nsources = [\"https://a\"]\n";
    let msg = cat
        .extend_from_toml(unknown, "w.toml")
        .expect_err("unknown model")
        .to_string();
    assert!(
        msg.contains("`w`") && msg.contains("model") && msg.contains("nope"),
        "{msg}"
    );
    let negative = "[[workload]]\nid = \"w\"\nsuite = \"s\"\nmodel = \"llama-2-70b\"\nisl = -1.0\nsources = [\"https://a\"]\n";
    let msg = cat
        .extend_from_toml(negative, "w.toml")
        .expect_err("negative isl")
        .to_string();
    assert!(msg.contains("isl"), "{msg}");
    let huge = negative.replace("isl = -1.0", "isl = 1e30");
    let msg = cat
        .extend_from_toml(&huge, "w.toml")
        .expect_err("a typo's length")
        .to_string();
    assert!(
        msg.contains("isl") && msg.contains("1,000,000,000"),
        "{msg}"
    );
    let good = "[[workload]]\nid = \"mine\"\nsuite = \"s\"\nmodel = \"llama-2-70b\"\nisl = 100.0\nosl = 50.0\nsources = [\"https://a\"]\n";
    cat.extend_from_toml(good, "w.toml").expect("good workload");
    assert_eq!(
        cat.suite_workload("s", "llama-2-70b").expect("added").isl,
        Some(100.0)
    );
    // A user's entry for MLPerf's Llama 2 70B under a new id overrides the built-in one.
    let mine = "[[workload]]\nid = \"my-orca\"\nsuite = \"mlperf\"\nmodel = \"llama-2-70b\"\nisl = 300.0\nsources = [\"https://a\"]\n";
    cat.extend_from_toml(mine, "w.toml").expect("override");
    assert_eq!(
        cat.suite_workload("mlperf", "llama-2-70b")
            .expect("mine")
            .id,
        "my-orca"
    );
    assert!(cat.workload("mlperf-llama2-70b").is_ok());
    let err = cat.workload("nope").expect_err("unknown").to_string();
    assert!(
        err.contains("unknown workload `nope`") && err.contains("my-orca"),
        "{err}"
    );
}

#[test]
fn moe_split_matches_published_totals() {
    let cat = Catalog::builtin().expect("catalog");
    // DeepSeek-R1: 671B total, 37B active (config.json).
    let m = cat.model("deepseek-r1").expect("model");
    let active = m.dense_params() + m.touched_expert_params(1.0);
    assert!((active / 1e9 - 37.0).abs() < 1.5, "active {}", active / 1e9);
    assert!(m.touched_expert_params(1e6) > 0.99 * m.routed_expert_params());
    let dense = cat.model("llama-3.1-70b").expect("model");
    assert_eq!(dense.routed_expert_params(), 0.0);
    assert_eq!(
        dense.weight_bytes(Precision::Fp8),
        dense.total_params_b * 1e9
    );
    // gpt-oss-120b ships its experts in MXFP4 and the rest in BF16, a checkpoint of about
    // 65 GB (https://huggingface.co/openai/gpt-oss-120b/tree/main). Quantised to FP8,
    // every weight is FP8.
    let oss = cat.model("gpt-oss-120b").expect("model");
    let native = oss.weight_bytes(Precision::Fp4) / 1e9;
    assert!((63.0..67.0).contains(&native), "{native} GB");
    assert!(native > oss.total_params_b * Precision::Fp4.bytes() + 2.5);
    assert_eq!(oss.weight_bytes(Precision::Fp8), oss.total_params_b * 1e9);
}

#[test]
fn kv_sizes_follow_the_attention_kind() {
    let cat = Catalog::builtin().expect("catalog");
    // Llama 3.1 70B: 80 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 327,680 bytes.
    let l = cat.model("llama-3.1-70b").expect("model");
    assert_eq!(l.kv_bytes(1.0, Precision::Bf16), 327_680.0);
    // DeepSeek MLA: 61 layers x (512 + 64) x 2 bytes.
    let d = cat.model("deepseek-r1").expect("model");
    assert_eq!(d.kv_bytes(1.0, Precision::Bf16), 61.0 * 576.0 * 2.0);
    // gpt-oss: half the layers slide over 128 tokens, so long contexts cost about half.
    let g = cat.model("gpt-oss-120b").expect("model");
    let ratio =
        g.kv_bytes(100_000.0, Precision::Bf16) / (100_000.0 * g.kv_bytes(1.0, Precision::Bf16));
    assert!((ratio - 0.5).abs() < 0.01, "{ratio}");
}

#[test]
fn attention_arithmetic_follows_the_pass() {
    let cat = Catalog::builtin().expect("catalog");
    // DeepSeek decodes in the latent space: 2 x 128 heads x (576 + 512) per attended token
    // per layer; a prompt attends with decompressed heads, 2 x 128 x (192 + 128).
    let d = cat.model("deepseek-r1").expect("model");
    assert_eq!(
        d.attention_flops(1000.0),
        2.0 * 128.0 * 1088.0 * 61.0 * 1000.0
    );
    assert_eq!(
        d.prompt_attention_flops(1000.0),
        2.0 * 128.0 * 320.0 * 61.0 * 1000.0
    );
    // Grouped-query attention is the same in both passes: 4 x 64 heads x 128 x 80 layers.
    let l = cat.model("llama-3.1-70b").expect("model");
    assert_eq!(
        l.attention_flops(1000.0),
        4.0 * 64.0 * 128.0 * 80.0 * 1000.0
    );
    assert_eq!(l.prompt_attention_flops(1000.0), l.attention_flops(1000.0));
}

#[test]
fn a_user_file_adds_and_replaces_entries() {
    let mut cat = Catalog::builtin().expect("catalog");
    let text = r#"
[[system]]
id = "h100-sxm"
vendor = "NVIDIA"
kind = "gpu"
system = "test node"
memory_gb = 96.0
memory_bw_tb_s = 4.0
dense_tflops = { bf16 = 1000.0 }
chips_per_system = 4
interconnect_gb_s = 900.0
sources = ["https://example.org/spec"]

[[system]]
id = "my-chip"
vendor = "Acme"
kind = "gpu"
system = "Acme box"
memory_gb = 48.0
memory_bw_tb_s = 1.0
dense_tflops = { bf16 = 200.0 }
chips_per_system = 2
interconnect_gb_s = 400.0
sources = ["https://example.org/acme"]
"#;
    let before = cat.systems().len();
    cat.extend_from_toml(text, "user.toml").expect("extends");
    assert_eq!(cat.systems().len(), before + 1);
    assert_eq!(cat.system("h100-sxm").expect("replaced").memory_gb, 96.0);
    assert_eq!(cat.system("my-chip").expect("added").kind, SystemKind::Gpu);
    // Loose lookups keep every digit of a system's name; an alias that already names
    // another entry is refused, since a name two entries answered to would name neither.
    let chip = |id: &str, alias: &str| {
        format!("[[system]]\nid = \"{id}\"\naliases = [\"{alias}\"]\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = 24.0\nmemory_bw_tb_s = 1.0\ndense_tflops = {{ bf16 = 100.0 }}\nchips_per_system = 1\nsources = [\"https://example.org\"]\n")
    };
    let shared = format!("{}{}", chip("rtx-4090", "ada"), chip("rtx-5090", "ada"));
    refused(
        &mut cat,
        &shared,
        "user.toml",
        &[
            "`rtx-5090`",
            "field `aliases`: `ada` already names `rtx-4090`",
        ],
    );
    refused(
        &mut cat,
        &chip("my-h100", "H100 SXM"),
        "user.toml",
        &["`H100 SXM` already names `h100-sxm`"],
    );
    // So is an alias that reads, as published names are read, as another's name: spelled
    // exactly it would win, and move `NVIDIA H200` from the built-in to the new entry.
    refused(
        &mut cat,
        &chip("my-chip-2", "NVIDIA H200"),
        "user.toml",
        &["line 3", "`NVIDIA H200` reads as a name of `h200`"],
    );
    assert_eq!(cat.system("NVIDIA H200").expect("published").id, "h200");
    let two = format!(
        "{}{}",
        chip("rtx-4090", "ada"),
        chip("rtx-5090", "blackwell")
    );
    cat.extend_from_toml(&two, "user.toml").expect("extends");
    assert_eq!(cat.system("RTX-4090").expect("case").id, "rtx-4090");
    assert_eq!(cat.system("RTX_5090").expect("underscore").id, "rtx-5090");
    assert_eq!(cat.system("ada").expect("alias").id, "rtx-4090");
    assert!(cat.system("rtx").is_err());
    // Two entries of one id in one file are refused rather than the last one winning.
    refused(
        &mut cat,
        &format!("{}{}", chip("twin", "twin-a"), chip("twin", "twin-b")),
        "user.toml",
        &[
            "user.toml: line 13: entry `twin`",
            "a second `[[system]]` entry with this id",
        ],
    );
    // An id that is already another entry's name is refused too, whichever comes first.
    refused(
        &mut cat,
        &chip("WSE-3", "my-wafer"),
        "user.toml",
        &["field `id`: `WSE-3` already names `cs3`"],
    );
    refused(
        &mut cat,
        &format!("{}{}", chip("chip-a", "chip-b"), chip("chip-b", "chip-c")),
        "user.toml",
        &["`chip-b` already names `chip-a`"],
    );
    // Every source is a web address, a price's as much as the system's; a price with none
    // says nothing of where it comes from.
    refused(
        &mut cat,
        &chip("no-url", "no-url-1").replace("https://example.org", "not a url"),
        "user.toml",
        &[
            "entry `no-url`",
            "field `sources`: `not a url` is not a web address",
        ],
    );
    refused(
        &mut cat,
        &format!(
            "{}[system.price]\nrent_usd_per_chip_hour = 2.0\n",
            chip("unsourced", "unsourced-1")
        ),
        "user.toml",
        &[
            "entry `unsourced`",
            "field `price.sources` must name at least one URL",
        ],
    );
    // An error in an inline table names the table's line.
    let inline = chip("odd", "odd-one").replace("{ bf16 = 100.0 }", "{ bf16 = 1e12 }");
    refused(
        &mut cat,
        &inline,
        "user.toml",
        &["user.toml: line 9: entry `odd`", "dense_tflops.bf16"],
    );
}

/// The error a user file draws, which must name every one of `parts`.
fn refused(cat: &mut Catalog, text: &str, file: &str, parts: &[&str]) {
    let state = |c: &Catalog| format!("{:?}{:?}{:?}", c.systems(), c.models(), c.workloads());
    let before = state(cat);
    let msg = cat
        .extend_from_toml(text, file)
        .expect_err("a bad file is refused")
        .to_string();
    assert!(parts.iter().all(|p| msg.contains(p)), "{msg}");
    // Nothing of a refused file stays behind, neither an added entry nor a replaced one.
    assert!(before == state(cat), "{msg}");
}

#[test]
fn a_bad_file_names_its_line_and_field() {
    let mut cat = Catalog::builtin().expect("catalog");
    let text = "[[system]]\nid = \"x\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = \"lots\"\n";
    refused(
        &mut cat,
        text,
        "user.toml",
        &["user.toml", "line 6", "memory_gb"],
    );
    let missing = "[[model]]\nid = \"m\"\nlayers = 2\n";
    refused(&mut cat, missing, "m.toml", &["m.toml", "missing field"]);
    let semantic = "[[system]]\nid = \"y\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nchips_per_system = 0\nsources = [\"https://a\"]\n";
    refused(&mut cat, semantic, "s.toml", &["`y`", "chips_per_system"]);
    // A capacity tier needs its bandwidth too.
    let tier = "[[system]]\nid = \"z\"\nvendor = \"v\"\nkind = \"rdu\"\nsystem = \"s\"\nmemory_gb = 64.0\nmemory_bw_tb_s = 1.6\ncapacity_memory_gb = 1536.0\ndense_tflops = { bf16 = 600.0 }\nchips_per_system = 16\nsources = [\"https://a\"]\n";
    refused(
        &mut cat,
        tier,
        "t.toml",
        &["`z`", "capacity_memory_bw_tb_s"],
    );
    // A wafer's SRAM holds and feeds its weights: it needs a size and a bandwidth, agrees
    // with its cores, and has no off-wafer memory the physics would read at SRAM speed.
    let wafer = |extra: &str| {
        format!("[[system]]\nid = \"w\"\nvendor = \"v\"\nkind = \"wafer\"\nsystem = \"s\"\nchips_per_system = 1\nsram_gb = 44.0\nsram_bw_tb_s = 21000.0\n{extra}sources = [\"https://a\"]\n[system.mesh]\ncores_x = 762\ncores_y = 1172\nclock_ghz = 1.1\nsram_per_core_kb = 48.0\nfmac_per_cycle = 8.0\nsources = [\"https://a\"]\n")
    };
    let mut ok = Catalog::builtin().expect("catalog");
    ok.extend_from_toml(&wafer(""), "w.toml")
        .expect("a wafer as the CS-3");
    for (from, to, field) in [
        (
            "sram_bw_tb_s = 21000.0",
            "sram_bw_tb_s = 0.0",
            "sram_bw_tb_s",
        ),
        ("sram_gb = 44.0", "sram_gb = 88.0", "sram_gb"),
        (
            "sram_gb = 44.0",
            "sram_gb = 44.0\nmemory_gb = 1200.0\nmemory_bw_tb_s = 0.15",
            "memory_gb",
        ),
    ] {
        refused(
            &mut cat,
            &wafer("").replace(from, to),
            "w.toml",
            &["`w`", &format!("field `{field}`")],
        );
    }
    refused(
        &mut cat,
        &wafer("").replace("cores_x = 762", "cores_x = 0"),
        "w.toml",
        &["line 11", "field `mesh.cores_x`"],
    );
    // Two workloads of one id in one file are refused.
    let workload = |id: &str| {
        format!("[[workload]]\nid = \"{id}\"\nsuite = \"s\"\nmodel = \"llama-3.1-8b\"\nsources = [\"https://a\"]\n")
    };
    let twice = format!("{}{}", workload("w1"), workload("w1"));
    refused(
        &mut cat,
        &twice,
        "w.toml",
        &["`w1`", "a second `[[workload]]`"],
    );
    // A GPU holds its weights in HBM, and no figure may be beyond any hardware.
    let gpu_base = "[[system]]\nid = \"w\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_bw_tb_s = 1.0\ndense_tflops = { bf16 = 100.0 }\nchips_per_system = 1\nsources = [\"https://a\"]\n";
    let with = |extra: &str| format!("{gpu_base}{extra}");
    refused(
        &mut cat,
        &with("sram_gb = 1.0\n"),
        "w.toml",
        &["`w`", "memory_gb"],
    );
    refused(
        &mut cat,
        &with("memory_gb = 1e308\n"),
        "w.toml",
        &["`w`", "memory_gb", "10^9"],
    );
    refused(
        &mut cat,
        &with("memory_gb = 80.0\nsystem_power_kw = 1e-300\n"),
        "w.toml",
        &["w.toml: line 11: entry `w`", "system_power_kw"],
    );
    // Only the RDU's physics streams from that tier; a GPU given one is refused.
    let gpu = tier.replace("\"rdu\"", "\"gpu\"").replace(
        "capacity_memory_gb = 1536.0\n",
        "capacity_memory_gb = 480.0\ncapacity_memory_bw_tb_s = 0.5\ninterconnect_gb_s = 900.0\n",
    );
    refused(&mut cat, &gpu, "g.toml", &["`z`", "rdu"]);
    // A GPU system of several chips prices their exchanges at its fabric's rate, which it
    // must give; a system of one GPU reaches others over the network.
    let lone = tier
        .replace("\"rdu\"", "\"gpu\"")
        .replace("capacity_memory_gb = 1536.0\n", "");
    refused(
        &mut cat,
        &lone,
        "g.toml",
        &["g.toml: line 2: entry `z`", "interconnect_gb_s"],
    );
    cat.extend_from_toml(
        &lone.replace("chips_per_system = 16", "chips_per_system = 1"),
        "g.toml",
    )
    .expect("one GPU");
    // A mixture of experts whose chosen experts alone outweigh its active parameters.
    let moe = "[[model]]\nid = \"moe\"\nfamily = \"f\"\ntotal_params_b = 50.0\nactive_params_b = 1.0\nlayers = 10\nhidden = 4096\nheads = 32\nkv_heads = 8\nhead_dim = 128\nffn_hidden = 14336\nvocab = 32000\nmax_context = 4096\nattention = \"gqa\"\nexperts = 8\nexperts_per_token = 2\nsources = [\"https://a\"]\n";
    refused(&mut cat, moe, "moe.toml", &["`moe`", "active_params_b"]);
    // An MLA query-key head holds its rope part and more.
    let mla = "[[model]]\nid = \"mla\"\nfamily = \"f\"\ntotal_params_b = 16.0\nactive_params_b = 16.0\nlayers = 27\nhidden = 2048\nheads = 16\nkv_heads = 16\nhead_dim = 64\nffn_hidden = 10944\nvocab = 102400\nmax_context = 4096\nattention = \"mla\"\nkv_lora_rank = 512\nqk_rope_dim = 64\nsources = [\"https://a\"]\n";
    refused(
        &mut cat,
        mla,
        "mla.toml",
        &["`mla`", "head_dim", "qk_rope_dim"],
    );
    cat.extend_from_toml(&mla.replace("head_dim = 64", "head_dim = 192"), "mla.toml")
        .expect("a head wider than its rope part");
    // A zero shape is named on its own line.
    refused(
        &mut cat,
        &mla.replace("head_dim = 64", "head_dim = 192")
            .replace("layers = 27", "layers = 0"),
        "zero.toml",
        &["zero.toml: line 6", "`mla`", "field `layers`"],
    );
    // A mixed checkpoint's other weights are wider than its native format, which it names.
    let mixed = mla.replace("head_dim = 64", "head_dim = 192");
    refused(
        &mut cat,
        &mixed.replace("attention = ", "dense_precision = \"bf16\"\nattention = "),
        "mix.toml",
        &["`mla`", "dense_precision", "native_precision"],
    );
    refused(
        &mut cat,
        &mixed.replace(
            "attention = ",
            "native_precision = \"fp8\"\ndense_precision = \"fp4\"\nattention = ",
        ),
        "mix.toml",
        &["`mla`", "dense_precision", "wider"],
    );
    // The latent's width sizes the cache: an MLA model without it is refused, not given
    // DeepSeek-V3's.
    refused(
        &mut cat,
        &mla.replace("head_dim = 64", "head_dim = 192")
            .replace("kv_lora_rank = 512\n", ""),
        "mla.toml",
        &["`mla`", "kv_lora_rank"],
    );
    // Fields of parts the model lacks, and a parameter count its shapes cannot fit in, are
    // mistakes, not silently ignored.
    let dense = mixed
        .replace(
            "attention = \"mla\"\nkv_lora_rank = 512\nqk_rope_dim = 64\n",
            "attention = \"gqa\"\n",
        )
        .replace(
            "total_params_b = 16.0\nactive_params_b = 16.0",
            "total_params_b = 2.5\nactive_params_b = 2.5",
        );
    cat.extend_from_toml(&dense, "dense.toml")
        .expect("a dense GQA model");
    // A dense model's count is what its shapes hold (2.1 to 2.9 billion here), and every
    // token uses all of it.
    refused(
        &mut cat,
        &dense.replace("= 2.5", "= 16.0"),
        "dense.toml",
        &["`mla`", "total_params_b", "2.10 to 2.91 billion"],
    );
    refused(
        &mut cat,
        &dense.replace("active_params_b = 2.5", "active_params_b = 1.0"),
        "dense.toml",
        &["`mla`", "active_params_b", "dense"],
    );
    refused(
        &mut cat,
        &dense.replace("attention = ", "experts_per_token = 2\nattention = "),
        "dense.toml",
        &["`mla`", "experts_per_token", "experts"],
    );
    refused(
        &mut cat,
        &dense.replace("attention = ", "kv_lora_rank = 512\nattention = "),
        "dense.toml",
        &["`mla`", "kv_lora_rank", "latent"],
    );
    refused(
        &mut cat,
        &dense.replace(
            "total_params_b = 2.5\nactive_params_b = 2.5",
            "total_params_b = 0.001\nactive_params_b = 0.001",
        ),
        "dense.toml",
        &["`mla`", "total_params_b", "billion"],
    );
    // A measurement above the datasheet, or without its source, is refused.
    let chip = "[[system]]\nid = \"w\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = 80.0\nmemory_bw_tb_s = 3.0\ndense_tflops = { bf16 = 1000.0, fp8 = 2000.0 }\nchips_per_system = 8\ninterconnect_gb_s = 900.0\nsources = [\"https://a\"]\n";
    let measured = |table: &str| format!("{chip}[system.measured]\n{table}");
    let fast = measured("gemm_tflops = { fp8 = 2100.0 }\nsources = [\"https://m\"]\n");
    // Named at the line that sets it, inside the entry's `measured` table.
    refused(
        &mut cat,
        &fast,
        "f.toml",
        &["line 13", "`w`", "gemm_tflops"],
    );
    let stream = measured("memory_read_bw_tb_s = 3.5\nsources = [\"https://m\"]\n");
    refused(&mut cat, &stream, "b.toml", &["`w`", "memory_read_bw_tb_s"]);
    let unsourced = measured("memory_read_bw_tb_s = 2.7\n");
    refused(&mut cat, &unsourced, "u.toml", &["`w`", "sources"]);
    // A precision the datasheet gives no peak for cannot be read as a share.
    let fp4 = measured("gemm_tflops = { fp4 = 1400.0 }\nsources = [\"https://m\"]\n");
    refused(&mut cat, &fp4, "a.toml", &["`w`", "gemm_tflops"]);
    // Only the GPU physics reads a measurement.
    let lpu = measured("memory_read_bw_tb_s = 2.7\nsources = [\"https://m\"]\n")
        .replace("\"gpu\"", "\"lpu\"");
    refused(&mut cat, &lpu, "l.toml", &["`w`", "gpu"]);
    // Figures that would give negative or infinite times, energies or capacities.
    let nan = "nan";
    for (from, to, field) in [
        (
            "dense_tflops = { bf16 = 1000.0,",
            "dense_tflops = { bf16 = -1.0,",
            "dense_tflops.bf16",
        ),
        (
            "memory_bw_tb_s = 3.0",
            &*format!("memory_bw_tb_s = {nan}"),
            "memory_bw_tb_s",
        ),
        ("memory_gb = 80.0", "memory_gb = 1e400", "memory_gb"),
        (
            "chips_per_system = 8",
            "chips_per_system = 8\nsystem_power_kw = -10.2",
            "system_power_kw",
        ),
        (
            "id = \"w\"",
            "id = \"w\"\nchip_power_w = nan",
            "chip_power_w",
        ),
    ] {
        let bad = chip.replace(from, to);
        assert_ne!(bad, chip, "{from}");
        if to.contains("1e400") {
            // TOML reads 1e400 as infinity or refuses it; either way the file is refused.
            assert!(cat.clone().extend_from_toml(&bad, "n.toml").is_err());
        } else {
            refused(&mut cat, &bad, "n.toml", &["`w`", field]);
        }
    }
    refused(
        &mut cat,
        &chip.replace("id = \"w\"", "id = \" \""),
        "e.toml",
        &["id"],
    );
    // Model shapes: key-value heads must group the query heads; sizes must be above 0.
    let dense = moe
        .replace("experts = 8\nexperts_per_token = 2\n", "")
        .replace(
            "total_params_b = 50.0\nactive_params_b = 1.0",
            "total_params_b = 2.0\nactive_params_b = 2.0",
        );
    assert!(cat.clone().extend_from_toml(&dense, "d.toml").is_ok());
    refused(
        &mut cat,
        &dense.replace("kv_heads = 8", "kv_heads = 64"),
        "k.toml",
        &["`moe`", "kv_heads"],
    );
    refused(
        &mut cat,
        &dense.replace("kv_heads = 8", "kv_heads = 12"),
        "k.toml",
        &["`moe`", "kv_heads"],
    );
    refused(
        &mut cat,
        &dense.replace("head_dim = 128", "head_dim = 0"),
        "h.toml",
        &["`moe`", "head_dim"],
    );
    refused(
        &mut cat,
        &dense.replace("max_context = 4096", "max_context = 0"),
        "c.toml",
        &["`moe`", "max_context"],
    );
    // Figures that contradict one another: a system drawing less than its chips, a mixture
    // of experts whose token uses all it holds, shared experts without routed ones,
    // multi-head attention with fewer key-value heads.
    refused(
        &mut cat,
        &chip.replace(
            "chips_per_system = 8",
            "chips_per_system = 8\nchip_power_w = 700.0\nsystem_power_kw = 0.001",
        ),
        "p.toml",
        &["`w`", "system_power_kw", "8 x 700 W"],
    );
    refused(
        &mut cat,
        &moe.replace(
            "total_params_b = 50.0\nactive_params_b = 1.0",
            "total_params_b = 50.0\nactive_params_b = 50.0",
        ),
        "a.toml",
        &["`moe`", "active_params_b", "2 of the 8 experts"],
    );
    refused(
        &mut cat,
        &dense.replace("vocab = 32000", "vocab = 32000\nshared_experts = 100"),
        "s.toml",
        &["`moe`", "shared_experts"],
    );
    refused(
        &mut cat,
        &dense.replace("attention = \"gqa\"", "attention = \"mha\""),
        "m.toml",
        &["`moe`", "kv_heads", "gqa"],
    );
    // A good entry ahead of a bad one in the same file is not kept either.
    let pair = format!("{chip}{semantic}");
    refused(&mut cat, &pair, "p.toml", &["`y`", "chips_per_system"]);
    assert!(cat.system("w").is_err());
}

#[test]
fn measured_figures_give_the_achieved_shares() {
    let cat = Catalog::builtin().expect("catalog");
    let h100 = cat.system("h100-sxm").expect("h100");
    // 1,382.2 of 1,979 TFLOP/s at FP8, 3.18 of 3.35 TB/s.
    let gemm = h100.gemm_fraction(Precision::Fp8).expect("measured");
    assert!((gemm - 1382.2 / 1979.0).abs() < 1e-9, "{gemm}");
    // Only FP8 was measured on H100: a 16-bit product takes its share.
    assert_eq!(h100.gemm_fraction(Precision::Bf16), Some(gemm));
    // GB200 was measured at two precisions, each its own share; 16-bit takes their mean.
    let gb200 = cat.system("gb200").expect("gb200");
    let fp8 = gb200.gemm_fraction(Precision::Fp8).expect("fp8");
    let fp4 = gb200.gemm_fraction(Precision::Fp4).expect("fp4");
    assert!((fp8 - 2906.9 / 5000.0).abs() < 1e-9 && (fp4 - 7627.6 / 10000.0).abs() < 1e-9);
    let bf16 = gb200.gemm_fraction(Precision::Bf16).expect("bf16");
    assert!((bf16 - (fp8 + fp4) / 2.0).abs() < 1e-12);
    let bw = h100.read_bw_fraction().expect("measured");
    assert!((bw - 3.18 / 3.35).abs() < 1e-9, "{bw}");
    // A chip nobody measured has neither.
    let b300 = cat.system("b300").expect("b300");
    assert!(b300.gemm_fraction(Precision::Fp8).is_none() && b300.read_bw_fraction().is_none());
}

/// A chip's matrix share is its FP8 measurement, else its INT8 one, else its 16-bit one,
/// never its FP4 one, else the one its `matrix_share_from` system measured; the lending is
/// checked where it is written, and a borrower follows its lender when a later file
/// replaces it.
#[test]
fn a_system_borrows_the_matrix_share_of_its_die() {
    let mut cat = Catalog::builtin().expect("catalog");
    let share = |cat: &Catalog, id: &str| cat.system(id).expect(id).matrix_share();
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    // Own measurements: FP8 where measured (GB200's FP4 figure is not its share), 16-bit
    // on A100, which has no FP8.
    assert!(close(share(&cat, "h100-sxm"), 1382.2 / 1979.0));
    assert!(close(share(&cat, "gb200"), 2906.9 / 5000.0));
    assert!(close(share(&cat, "a100-sxm"), 256.5 / 312.0));
    // Borrowed: B200 from GB200, the PCIe and NVL cards from their SXM parts. MI325X and
    // B300 borrow nothing.
    for (borrower, lender) in [
        ("b200", "gb200"),
        ("h100-pcie", "h100-sxm"),
        ("h200-nvl", "h200"),
    ] {
        assert_eq!(share(&cat, borrower), share(&cat, lender), "{borrower}");
    }
    for none in ["mi325x", "b300"] {
        assert_eq!(share(&cat, none), None, "{none}");
    }
    let chip = |id: &str, extra: &str| {
        format!("[[system]]\nid = \"{id}\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = 24.0\nmemory_bw_tb_s = 1.0\ndense_tflops = {{ bf16 = 50.0, fp8 = 100.0, fp4 = 200.0 }}\nchips_per_system = 1\n{extra}\nsources = [\"https://example.org\"]\n")
    };
    let measured = |gemm: &str| {
        format!("\n[system.measured]\ngemm_tflops = {{ {gemm} }}\nsources = [\"https://example.org\"]\n")
    };
    // Measured at FP4 alone, a chip has no share: large FP4 products are not its measure.
    // Measured at INT8 and 16 bits, it takes INT8's.
    let fp4 = format!("{}{}", chip("fp4-only", ""), measured("fp4 = 150.0"));
    cat.extend_from_toml(&fp4, "f.toml").expect("adds");
    assert_eq!(share(&cat, "fp4-only"), None);
    let int8 = format!(
        "{}{}",
        chip("int8", "").replace("fp4 = 200.0", "int8 = 100.0"),
        measured("int8 = 80.0, bf16 = 30.0")
    );
    cat.extend_from_toml(&int8, "i.toml").expect("adds");
    assert!(close(share(&cat, "int8"), 0.8));
    // A new chip may borrow by alias.
    cat.extend_from_toml(&chip("twin", "matrix_share_from = \"h100\""), "t.toml")
        .expect("borrows");
    assert_eq!(share(&cat, "twin"), share(&cat, "h100-sxm"));
    let field = "matrix_share_from";
    for (id, from, says) in [
        ("u", "nope", "unknown system `nope`"),
        ("v", "v", "itself"),
        ("w", "mi325x", "`mi325x` has no measured"),
        ("y", "b200", "`b200` borrows its own share from `gb200`"),
    ] {
        let text = chip(id, &format!("matrix_share_from = \"{from}\""));
        refused(
            &mut cat,
            &text,
            "u.toml",
            &[&format!("`{id}`"), field, says],
        );
    }
    let own = format!(
        "{}{}",
        chip("x", "matrix_share_from = \"h100-sxm\""),
        measured("fp8 = 60.0")
    );
    refused(&mut cat, &own, "x.toml", &["`x`", field, "of its own"]);
    // A later file that replaces the lender moves its borrowers with it: to its new
    // measurement, through it to the system it now borrows from, or, with nothing to
    // follow, to none, rather than refusing the file, since the borrowers were not what it
    // changed.
    let lender = |extra: &str| format!("{}{extra}", chip("gb200", ""));
    cat.extend_from_toml(&lender(&measured("fp8 = 50.0")), "r.toml")
        .expect("replaces the lender");
    assert!(close(share(&cat, "b200"), 0.5));
    cat.extend_from_toml(&lender("matrix_share_from = \"h200\""), "r.toml")
        .expect("replaces the lender");
    assert_eq!(share(&cat, "b200"), share(&cat, "h200"));
    cat.extend_from_toml(&lender(""), "r.toml")
        .expect("replaces the lender");
    assert_eq!(share(&cat, "b200"), None);
}

#[test]
fn every_model_is_found_by_its_id_written_with_hyphens_moved() {
    let cat = Catalog::builtin().expect("catalog");
    for m in cat.models() {
        // Hyphens only where a letter meets a digit (`llama-3.1-8b` as `llama3.1-8b`) or
        // doubled: the tokens are the same.
        let loose = m.id.replace("a-3", "a3").replace('-', "--");
        let found = cat.model(&loose).map(|f| f.id.as_str());
        assert_eq!(found.ok(), Some(m.id.as_str()), "{loose}");
        for a in &m.aliases {
            assert_eq!(
                cat.model(a).map(|f| f.id.as_str()).ok(),
                Some(m.id.as_str()),
                "{a}"
            );
        }
    }
    // Cerebras's own model id.
    assert_eq!(
        cat.model("llama3.1-8b").map(|m| m.id.as_str()).ok(),
        Some("llama-3.1-8b")
    );
}

#[test]
fn unknown_ids_list_what_exists() {
    let cat = Catalog::builtin().expect("catalog");
    match cat.system("h900") {
        Err(CatalogError::UnknownSystem { known, .. }) => {
            assert!(known.contains("h100-sxm") && known.contains("cs3"))
        }
        other => panic!("expected UnknownSystem, got {other:?}"),
    }
    assert!(cat.model("llama-9").is_err());
}

#[test]
fn published_names_and_aliases_find_their_entries() {
    let cat = Catalog::builtin().expect("catalog");
    for (name, id) in [
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
        ("deepseek-ai/DeepSeek-R1-0528", "deepseek-r1"),
        (
            "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
            "llama-4-maverick",
        ),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        // Serving tiers and number formats in a provider's model name.
        ("llama-3.1-8b-instant", "llama-3.1-8b"),
        ("llama-3.3-70b-versatile", "llama-3.3-70b"),
        ("nvidia/Llama-3.1-405B-Instruct-FP8", "llama-3.1-405b"),
        (
            "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
            "llama-3.3-70b",
        ),
        // MLPerf's benchmark names, with an accuracy target or the edge suite.
        ("llama2-70b-99", "llama-2-70b"),
        ("llama2-70b-99.9", "llama-2-70b"),
        ("llama3.1-405b", "llama-3.1-405b"),
        ("llama3.1-8b-edge", "llama-3.1-8b"),
        // Checkpoints of the same shapes as an entry are its aliases.
        ("deepseek-ai/DeepSeek-V3", "deepseek-r1"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek-r1"),
        ("Qwen/Qwen2.5-72B-Instruct", "qwen2-72b"),
        ("Qwen/QwQ-32B", "qwen2.5-32b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "qwen2.5-32b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "llama-3.1-8b"),
        ("zai-org/GLM-4.5", "glm-4.7"),
        // Models that benchmarks run most, each from its config.
        ("meta-llama/Llama-3.2-3B-Instruct", "llama-3.2-3b"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b"),
        ("google/gemma-3-27b-it", "gemma-3-27b"),
        (
            "Qwen/Qwen3-Coder-480B-A35B-Instruct",
            "qwen3-coder-480b-a35b",
        ),
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", "mixtral-8x22b"),
    ] {
        assert_eq!(cat.model(name).expect(name).id, id);
    }
    for (name, id) in [
        ("H100", "h100-sxm"),
        ("WSE-3", "cs3"),
        ("GB200-NVL72", "gb200"),
        // As published tables write them: maker, memory size, socket form, hyphens.
        ("H100 SXM5 80GB", "h100-sxm"),
        ("NVIDIA H200", "h200"),
        ("B200 SXM 180GB", "b200"),
        ("AMD Instinct MI300X", "mi300x"),
        ("Cerebras CS-3", "cs3"),
        ("CS3", "cs3"),
        ("SambaNova SN40L", "sn40l"),
        ("Groq LPU", "groq-lpu"),
        ("NVIDIA GB200 NVL72", "gb200"),
        ("MI300X OAM", "mi300x"),
        ("GroqCard", "groq-lpu"),
        ("Azure GB300 NVL72", "gb300"),
        // PCIe cards are their own entries, not the SXM parts.
        ("H100 PCIe 80GB", "h100-pcie"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA H100 80GB", "h100-sxm"),
    ] {
        assert_eq!(cat.system(name).expect(name).id, id);
    }
    // Near misses are still refused: a size is never dropped.
    assert!(cat.model("llama-3.1-7b").is_err());
    assert!(cat.system("h300").is_err());
    // A maker's name alone, or a card the catalog does not hold, names nothing.
    assert!(cat.system("NVIDIA").is_err());
    assert!(cat.system("A100 PCIe 80GB").is_err());
    assert!(cat.model("deepseek-v3.2").is_err());
    // Memory sizes and HBM generations are read, and a size must be the entry's own.
    for (name, id) in [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("AMD Instinct MI300X 192GB HBM3", "mi300x"),
        ("A100-SXM4-80GB", "a100-sxm"),
        ("B200 192 GB", "b200"),
    ] {
        assert_eq!(cat.system(name).expect(name).id, id);
    }
    let err = cat.system("NVIDIA A100-SXM4-40GB").expect_err("40 GB part");
    assert!(err.to_string().contains("has 80 GB, not 40 GB"), "{err}");
    // A user's entry named like a loose form of a built-in one is found by its own name.
    let mut mine = cat.clone();
    mine.extend_from_toml(
        "[[system]]\nid = \"a100-40gb\"\nvendor = \"v\"\nkind = \"gpu\"\nsystem = \"s\"\nmemory_gb = 40.0\nmemory_bw_tb_s = 1.6\ndense_tflops = { bf16 = 312.0 }\nchips_per_system = 8\ninterconnect_gb_s = 600.0\nsources = [\"https://a\"]\n",
        "mine.toml",
    )
    .expect("entry");
    assert_eq!(mine.system("A100-40GB").expect("mine").id, "a100-40gb");
    assert_eq!(mine.system("A100").expect("built-in").id, "a100-sxm");
    // A model named with its checkpoint's number format says that format.
    use switchyard_catalog::Precision;
    assert_eq!(
        Precision::in_model_name("nvidia/DeepSeek-R1-FP4"),
        Some(Precision::Fp4)
    );
    assert_eq!(
        Precision::in_model_name("Llama-3.1-405B-Instruct-FP8"),
        Some(Precision::Fp8)
    );
    assert_eq!(
        Precision::in_model_name("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"),
        Some(Precision::Fp8)
    );
    assert_eq!(Precision::in_model_name("gpt-oss-120b"), None);
    assert_eq!(Precision::in_model_name("some-dynamic"), None);
    // No two entries answer to the same name.
    let mut seen = std::collections::BTreeMap::new();
    for s in cat.systems() {
        for n in std::iter::once(&s.id).chain(&s.aliases) {
            let owner = seen.insert(n.to_ascii_lowercase(), s.id.clone());
            assert!(owner.is_none_or(|o| o == s.id), "{n} names two systems");
        }
    }
    for m in cat.models() {
        assert_eq!(cat.model(&m.id).expect("own id").id, m.id);
        for a in &m.aliases {
            assert_eq!(cat.model(a).expect("alias").id, m.id);
        }
    }
}

#[test]
fn precisions_parse_and_size() {
    assert_eq!("FP8".parse::<Precision>().expect("fp8"), Precision::Fp8);
    assert_eq!("mxfp4".parse::<Precision>().expect("fp4"), Precision::Fp4);
    // The spellings published results use for the same formats.
    for (alias, p) in [
        ("bfloat16", Precision::Bf16),
        ("float16", Precision::Fp16),
        ("e4m3", Precision::Fp8),
        ("W8A8", Precision::Int8),
        ("nvfp4", Precision::Fp4),
        ("FP8 (E4M3)", Precision::Fp8),
        ("fp8_e4m3fn", Precision::Fp8),
        ("Float8 E4M3FN", Precision::Fp8),
        (" BF16 ", Precision::Bf16),
    ] {
        assert_eq!(alias.parse::<Precision>().expect(alias), p);
    }
    assert!("fp3".parse::<Precision>().is_err());
    // Weight-only formats, as quantisers and engines name them: stored narrow, multiplied in
    // 16 bits; W4A8 is int4 multiplied in 8 bits.
    for (alias, p) in [
        ("w4a16", Precision::W4a16),
        ("AWQ", Precision::W4a16),
        ("gptq", Precision::W4a16),
        ("int4-awq", Precision::W4a16),
        ("INT4 (AWQ)", Precision::W4a16),
        ("W4A16_GPTQ", Precision::W4a16),
        ("GPTQ-Int8", Precision::W8a16),
        ("int8 (weight-only)", Precision::W8a16),
        ("W8A16", Precision::W8a16),
        ("INT4 (W4A16)", Precision::W4a16),
        ("INT8 (W8A16)", Precision::W8a16),
        ("GPTQ (Int8)", Precision::W8a16),
        ("AWQ (int8)", Precision::W8a16),
        ("int8 (weight_only)", Precision::W8a16),
        ("int8 (wo)", Precision::W8a16),
        ("GPTQ 4-bit", Precision::W4a16),
        ("gptq-4bit", Precision::W4a16),
        ("awq-int4", Precision::W4a16),
        ("fp8 (weight-only)", Precision::W8a16),
        ("fp4 (weight-only)", Precision::W4a16),
        ("nvfp4-awq", Precision::Fp4),
        ("w4a8", Precision::W4a8),
        ("W4A8_AWQ", Precision::W4a8),
        ("Int4 (W4A8)", Precision::W4a8),
        ("int4", Precision::Int4),
        ("w8a8-fp8", Precision::Fp8),
    ] {
        assert_eq!(alias.parse::<Precision>().expect(alias), p, "{alias}");
    }
    for p in Precision::ALL {
        assert_eq!(p.name().parse::<Precision>().expect("own name"), p);
    }
    assert_eq!(Precision::ALL.iter().filter(|p| p.weight_only()).count(), 2);
    // A weight-only word with no width it can take names no format.
    for bad in ["weight-only", "bf16 (weight-only)", "8-bit", "two"] {
        assert!(bad.parse::<Precision>().is_err(), "{bad}");
    }
    assert_eq!(Precision::Bf16.bytes(), 2.0);
    assert!(Precision::Fp4.bytes() > 0.5 && Precision::Fp4.bytes() < 0.6);
    assert_eq!(Precision::W4a16.bytes(), Precision::Int4.bytes());
    assert_eq!(Precision::W8a16.bytes(), Precision::Int8.bytes());
    // A quantised checkpoint's name says its format and still names its model.
    assert_eq!(
        Precision::in_model_name("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"),
        Some(Precision::W4a16)
    );
    for (name, p) in [
        (
            "Qwen/Qwen2.5-72B-Instruct-GPTQ-Int8",
            Some(Precision::W8a16),
        ),
        ("org/Model-8B-GPTQ-W8A16", Some(Precision::W8a16)),
        ("org/Model-8B-W8A16-GPTQ", Some(Precision::W8a16)),
        ("org/Model-8B-Int8-AWQ", Some(Precision::W8a16)),
        ("org/Model-8B-W4A8-AWQ", Some(Precision::W4a8)),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", Some(Precision::W4a16)),
        ("Llama-3.1-8B-Instruct", None),
        // An organisation's name is not the checkpoint's format.
        ("awq-lab/Llama-3.1-8B-Instruct", None),
    ] {
        assert_eq!(Precision::in_model_name(name), p, "{name}");
    }
    let cat = Catalog::builtin().expect("catalog");
    for (name, id) in [
        (
            "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4",
            "llama-3.1-70b",
        ),
        ("meta-llama/Llama-3.1-70B-Instruct-W8A8", "llama-3.1-70b"),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4", "qwen2.5-7b"),
        ("org/Qwen3-32B-W4A8-AWQ", "qwen3-32b"),
    ] {
        assert_eq!(cat.model(name).expect(name).id, id);
    }
}

/// A weight-only format streams its narrow weights and multiplies at the chip's 16-bit rate,
/// wherever the chip has narrower formats.
#[test]
fn weight_only_formats_multiply_in_sixteen_bits() {
    let cat = Catalog::builtin().expect("catalog");
    for id in ["h100-sxm", "b200", "mi300x", "a100-sxm", "sn40l"] {
        let s = cat.system(id).expect(id);
        let bf16 = s.flops(Precision::Bf16).expect("16-bit");
        for p in [Precision::W4a16, Precision::W8a16] {
            assert_eq!(s.flops(p), Some(bf16), "{id} {p}");
        }
    }
    // Int4 multiplies in the narrowest format the chip has, W4A8 in eight bits.
    let h100 = cat.system("h100-sxm").expect("h100");
    assert_eq!(
        h100.flops(Precision::Int4).map(|(_, q)| q),
        Some(Precision::Fp8)
    );
    let b200 = cat.system("b200").expect("b200");
    assert_eq!(
        b200.flops(Precision::Int4).map(|(_, q)| q),
        Some(Precision::Fp4)
    );
    assert_eq!(b200.flops(Precision::W4a8), b200.flops(Precision::Fp8));
}

/// Of every `global_every` layers the last attends globally: a remainder past the last
/// whole group is local.
#[test]
fn global_layers_follow_the_published_patterns() {
    let cat = Catalog::builtin().expect("catalog");
    let global = |id: &str| cat.model(id).expect("model").global_layers();
    // Gemma 3 27B: layers 6, 12, ..., 60 of 62.
    assert_eq!(global("gemma-3-27b"), 10.0);
    // Llama 4 Scout: one in four of 48; gpt-oss-120b: one in two of 36.
    assert_eq!(global("llama-4-scout"), 12.0);
    assert_eq!(global("gpt-oss-120b"), 18.0);
    // A model with no local layers has every layer global.
    assert_eq!(global("llama-3.1-8b"), 32.0);
    // A window without `global_every` is on every layer (Mistral 7B v0.1); `global_every`
    // without a window is refused, naming the field.
    let mut cat = cat.clone();
    let mistral = |extra: &str| {
        format!("[[model]]\nid = \"mistral-7b-v0.1\"\nfamily = \"mistral\"\ntotal_params_b = 7.2\nactive_params_b = 7.2\nlayers = 32\nhidden = 4096\nheads = 32\nkv_heads = 8\nhead_dim = 128\nffn_hidden = 14336\nvocab = 32000\nmax_context = 32768\nattention = \"gqa\"\n{extra}sources = [\"https://huggingface.co/mistralai/Mistral-7B-v0.1\"]\n")
    };
    cat.extend_from_toml(&mistral("sliding_window = 4096\n"), "user.toml")
        .expect("extends");
    assert_eq!(
        cat.model("mistral-7b-v0.1").expect("model").global_layers(),
        0.0
    );
    let e = cat
        .extend_from_toml(&mistral("global_every = 4\n"), "user.toml")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("global_every") && e.contains("sliding_window"),
        "{e}"
    );
}

/// The line that sets a field is found where the key is set, in an inline table too, and
/// not in a string, a comment or another table of the same key.
#[test]
fn the_line_of_a_field_is_where_its_key_is_set() {
    use switchyard_catalog::{field_offset, line_at};
    let text = "\
name = \"a, cooldown_s = 1\"   # cooldown_s = 2
[server]
listen = \"x\"
hosts = [
  [\"a\", \"b\"],
]
cooldown_s = 3
[ router ]
# cooldown_s = 4
faults = { spike_rate = 0.5, error_rate = 2.0 }
cooldown_s = 5
";
    let line =
        |span: std::ops::Range<usize>, field: &str| line_at(text, field_offset(text, span, field));
    // The top-level `[ router ]` table, spaces and all, past a comment that names the key.
    assert_eq!(line(0..0, "router.cooldown_s"), 11);
    // A key of a table whose multi-line array has a line that starts with `[`.
    assert_eq!(line(0..0, "server.cooldown_s"), 7);
    // Inside an inline table.
    assert_eq!(line(0..text.len(), "faults.error_rate"), 10);
    // A key named only in a string or a comment is not set there.
    assert_eq!(line(0..text.len(), "cooldown_s"), 7);
}
