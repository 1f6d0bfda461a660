"""Hardware probe: uarch/line/ISA mapping on recorded CPUs, the live machine, class, override, output."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import agent.machine.override as override_mod
import agent.machine.probe as probe_mod
import agent.machine.readers as readers_mod
from agent.machine.hwclass import hardware_class
from agent.machine.labels import profile_labels, slugify_label
from agent.machine.output import format_profile
from agent.machine.override import apply_profile_override, load_profile_override
from agent.machine.probe import probe
from agent.machine.profile import CpuInfo, GpuDevice, GpuInfo, HardwareProfile, MemoryInfo, ProfileError
from agent.machine.uarch import (
    AMD_FAMILIES, INTEL_FAMILIES, amd_uarch, cpu_uarch, intel_uarch, isa_flags, product_line,
)

CPUS = yaml.safe_load((Path(__file__).parent / "data" / "cpus.yaml").read_text())
LABEL_CHARS = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


def profile_from_record(record: dict, **changes) -> HardwareProfile:
    """A profile as a box with this recorded CPU would probe (mapping done by the real code)."""
    vendor, brand = record["vendor"], record["brand"]
    cpu = CpuInfo(
        brand=brand, vendor=vendor, family=record["family"], model=record["model"],
        stepping=record["stepping"],
        uarch=cpu_uarch(vendor, record["family"], record["model"], record["stepping"]),
        line=product_line(vendor, brand), flags=isa_flags(record["flags"].split()),
        cores=16, threads=32,
    )
    profile = HardwareProfile(hostname="box-a", cpu=cpu, memory=MemoryInfo(ram_gb=64.0))
    profile = profile.model_copy(update=changes)
    return profile.model_copy(update={"hardware_class": hardware_class(profile)})


def record(name: str) -> dict:
    return next(r for r in CPUS if r["name"] == name)


@pytest.fixture(scope="module")
def live_profile():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(override_mod.PROFILE_ENV, raising=False)
        return probe()


# ------------------------------------------------------------ recorded CPUs

@pytest.mark.parametrize("rec", CPUS, ids=[r["name"] for r in CPUS])
def test_recorded_cpu_maps_to_its_expected_uarch(rec):
    assert cpu_uarch(rec["vendor"], rec["family"], rec["model"], rec["stepping"]) == rec["expect"]["uarch"]


@pytest.mark.parametrize("rec", CPUS, ids=[r["name"] for r in CPUS])
def test_recorded_cpu_maps_to_its_expected_product_line(rec):
    assert product_line(rec["vendor"], rec["brand"]) == rec["expect"]["line"]


@pytest.mark.parametrize("rec", CPUS, ids=[r["name"] for r in CPUS])
def test_recorded_cpu_isa_flags_keep_what_llama_cpp_uses_and_nothing_it_lacks(rec):
    flags = isa_flags(rec["flags"].split())
    assert set(rec["expect"]["has"]) <= set(flags)
    assert not set(rec["expect"]["lacks"]) & set(flags)
    assert flags == sorted(flags)


def test_amd_zen_plus_models_are_carved_out_of_the_zen_range():
    assert amd_uarch(0x17, 0x08) == amd_uarch(0x17, 0x18) == "zen+"
    assert amd_uarch(0x17, 0x01) == amd_uarch(0x17, 0x2F) == amd_uarch(0x17, 0x50) == "zen"


def test_amd_range_edges_follow_the_kernel_table():
    assert amd_uarch(0x17, 0x30) == amd_uarch(0x17, 0x91) == amd_uarch(0x17, 0xAF) == "zen2"
    assert amd_uarch(0x17, 0x92) is None
    assert amd_uarch(0x19, 0x0F) == amd_uarch(0x19, 0x20) == "zen3"
    assert amd_uarch(0x19, 0x10) == amd_uarch(0x19, 0xAF) == "zen4"
    assert amd_uarch(0x1A, 0x4F) == amd_uarch(0x1A, 0x7F) == "zen5"
    assert amd_uarch(0x1A, 0x50) == amd_uarch(0x1A, 0xC0) == "zen6"
    assert amd_uarch(0x1A, 0x30) is None and amd_uarch(0x15, 0x01) is None


def test_intel_model_0x55_is_split_by_stepping():
    assert intel_uarch(6, 0x55, 4) == intel_uarch(6, 0x55) == "skylake-x"
    assert intel_uarch(6, 0x55, 5) == intel_uarch(6, 0x55, 7) == "cascadelake"
    assert intel_uarch(6, 0x55, 11) == "cooperlake"


def test_intel_kabylake_models_become_coffeelake_from_stepping_10():
    assert intel_uarch(6, 0x9E, 9) == intel_uarch(6, 0x8E, 9) == "kabylake"
    assert intel_uarch(6, 0x9E, 10) == intel_uarch(6, 0x8E, 10) == "coffeelake"


def test_intel_server_and_client_icelake_are_distinct():
    assert intel_uarch(6, 0x7D) == intel_uarch(6, 0x7E) == "icelake"
    assert intel_uarch(6, 0x6A) == intel_uarch(6, 0x6C) == "icelake-x"
    assert intel_uarch(6, 0xCF) == "emeraldrapids"
    assert intel_uarch(6, 0xAD) == intel_uarch(6, 0xAE) == "graniterapids"


def test_unknown_vendor_family_or_pre_haswell_model_gives_no_uarch():
    assert cpu_uarch("HygonGenuine", 0x18, 0x01) is None
    assert cpu_uarch("AMD", None, None) is None
    assert intel_uarch(6, 0x2D) is None          # Sandy Bridge-E predates the table
    assert intel_uarch(15, 0x04) is None


def test_product_line_does_not_cross_vendors():
    assert product_line("AMD", "Intel(R) Xeon(R) lookalike") is None
    assert product_line("Intel", "AMD EPYC lookalike") is None
    assert product_line("Intel", "Intel(R) Pentium(R) Dual-Core CPU E5300") is None
    assert product_line("AMD", "") is None


def test_isa_flags_accepts_pycpuinfo_spellings_and_adds_amx():
    flags = isa_flags(["AVX512VNNI", "avx512bf16", "avx512vbmi", "avxvnni", "amx-tile", "fma3", "sse2"])
    assert flags == sorted(["avx512_vnni", "avx512_bf16", "avx512_vbmi", "avx_vnni", "amx_tile", "amx", "fma"])
    assert "amx" not in isa_flags(["avx512f", "avx512_bf16"])


# ------------------------------------------------------------ this machine, live

def test_this_machine_probes_a_uarch_when_its_family_is_known(live_profile):
    cpu = live_profile.cpu
    known = (cpu.vendor == "AMD" and cpu.family in AMD_FAMILIES) or (
        cpu.vendor == "Intel" and cpu.family in INTEL_FAMILIES)
    if not known:
        pytest.skip(f"vendor {cpu.vendor} family {cpu.family} is outside the uarch tables")
    assert cpu.uarch is not None
    assert cpu.threads >= cpu.cores >= 1 and cpu.sockets >= 1 and cpu.numa_nodes >= 1
    assert live_profile.memory.ram_gb > 0


def test_this_machine_hardware_class_is_stable_across_two_probes(live_profile, monkeypatch):
    monkeypatch.delenv(override_mod.PROFILE_ENV, raising=False)
    again = probe()
    assert again.hardware_class == live_profile.hardware_class
    assert re.fullmatch(r"[0-9a-f]{12}", again.hardware_class)


def test_this_machine_caches_come_from_sysfs_in_kib(live_profile):
    if not Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        pytest.skip("no /sys cache index on this machine")
    assert set(live_profile.cpu.caches) >= {"l1d_kb", "l2_kb"}
    assert all(v > 0 for v in live_profile.cpu.caches.values())


def test_machine_without_nvidia_driver_reports_zero_gpus_with_a_reason(live_profile):
    import pynvml
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present here; the no-driver path needs a machine without one")
    assert live_profile.gpus.count == 0
    assert live_profile.gpus.devices == []
    assert live_profile.gpus.error and "NVIDIA" in live_profile.gpus.error


def test_nvml_driver_not_loaded_becomes_zero_gpus_with_a_reason(monkeypatch):
    import pynvml

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    gpus = readers_mod.probe_gpus()
    assert gpus.count == 0 and "not loaded" in gpus.error


def test_nvml_devices_are_collected_and_unsupported_fields_become_none(monkeypatch):
    import pynvml

    class Mem:
        total = 24 * 2**30
    boards = ["NVIDIA GeForce RTX 3090", b"NVIDIA RTX A4500"]

    def unsupported(*_):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake = {
        "nvmlInit": lambda: None, "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: "555.42",
        "nvmlDeviceGetCount": lambda: len(boards),
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: boards[h],
        "nvmlDeviceGetMemoryInfo": lambda h: Mem(),
        "nvmlDeviceGetCudaComputeCapability": lambda h: (8, 6),
        "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: 4,
        "nvmlDeviceGetMaxPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetEnforcedPowerLimit": unsupported,
    }
    for name, fn in fake.items():
        monkeypatch.setattr(pynvml, name, fn)
    gpus = readers_mod.probe_gpus()
    assert gpus.error is None and gpus.count == len(boards)
    assert [d.name for d in gpus.devices] == ["NVIDIA GeForce RTX 3090", "NVIDIA RTX A4500"]
    first = gpus.devices[0]
    assert first.vram_mb == Mem.total // 2**20 and first.compute_capability == "8.6"
    assert (first.pcie_gen, first.pcie_width, first.driver) == (4, 16, "555.42")
    assert first.power_limit_w is None


def test_probe_survives_missing_sys_proc_and_os_release(tmp_path, monkeypatch):
    monkeypatch.delenv(override_mod.PROFILE_ENV, raising=False)
    monkeypatch.setattr(readers_mod, "SYS", tmp_path / "sys")
    monkeypatch.setattr(readers_mod, "PROC", tmp_path / "proc")
    monkeypatch.setattr(readers_mod, "OS_RELEASE", tmp_path / "os-release")
    profile = probe()
    assert profile.cpu.sockets == 1 and profile.cpu.numa_nodes == 1 and profile.cpu.cores >= 1
    assert profile.cpu.caches == {}
    assert profile.os.governor is None and profile.os.boost is None and profile.os.thp is None
    assert profile.os.distro is None


def write_fake_cpu(sys_root: Path, cpu: int, package: int, core: int) -> None:
    topo = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
    topo.mkdir(parents=True)
    (topo / "physical_package_id").write_text(f"{package}\n")
    (topo / "core_id").write_text(f"{core}\n")


def test_topology_counts_cores_threads_sockets_and_numa_from_sysfs(tmp_path, monkeypatch):
    sys_root = tmp_path / "sys"
    layout = [(pkg, core) for pkg in range(2) for core in range(3) for _smt in range(2)]
    for cpu, (pkg, core) in enumerate(layout):
        write_fake_cpu(sys_root, cpu, pkg, core)
    (sys_root / "devices/system/cpu/cpu99").mkdir()          # offline: no topology
    for node in range(2):
        (sys_root / f"devices/system/node/node{node}").mkdir(parents=True)
    monkeypatch.setattr(readers_mod, "SYS", sys_root)
    assert readers_mod.cpu_topology() == (len(set(layout)), len(layout), 2)
    assert readers_mod.numa_node_count() == 2


def test_caches_read_level_type_and_size_per_index(tmp_path, monkeypatch):
    base = tmp_path / "devices/system/cpu/cpu0/cache"
    entries = [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K"),
               ("3", "Unified", "105M")]
    for i, (level, kind, size) in enumerate(entries):
        d = base / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(level)
        (d / "type").write_text(kind)
        (d / "size").write_text(size)
    monkeypatch.setattr(readers_mod, "SYS", tmp_path)
    assert readers_mod.cpu_caches() == {"l1d_kb": 48, "l1i_kb": 32, "l2_kb": 2048, "l3_kb": 105 * 1024}


def test_cpuinfo_is_fetched_once_per_process(monkeypatch):
    import cpuinfo
    calls = []
    rec = record("ryzen-9-5950x")

    def fake_get_cpu_info():
        calls.append(1)
        return {"brand_raw": rec["brand"], "vendor_id_raw": "AuthenticAMD", "family": rec["family"],
                "model": rec["model"], "stepping": rec["stepping"], "flags": rec["flags"].split()}
    monkeypatch.setattr(readers_mod, "_CPUINFO", None)
    monkeypatch.setattr(cpuinfo, "get_cpu_info", fake_get_cpu_info)
    first, second = probe_mod.probe_cpu(), probe_mod.probe_cpu()
    assert len(calls) == 1
    assert first == second and first.uarch == rec["expect"]["uarch"] and first.line == rec["expect"]["line"]


def test_missing_tool_version_is_none():
    assert readers_mod.tool_version(["hwmatrix-no-such-tool-xyz", "--version"]) is None


# ------------------------------------------------------------ hardware class

def test_hardware_class_ignores_hostname_and_ram_within_rounding():
    rec = record("threadripper-pro-3955wx")
    a = profile_from_record(rec, hostname="box-a", memory=MemoryInfo(ram_gb=62.7))
    b = profile_from_record(rec, hostname="box-b", memory=MemoryInfo(ram_gb=64.0))
    assert hardware_class(a) == hardware_class(b)


def test_hardware_class_changes_when_a_gpu_is_added():
    rec = record("threadripper-pro-3955wx")
    base = profile_from_record(rec)
    one = GpuDevice(index=0, name="NVIDIA GeForce RTX 3090")
    with_gpu = profile_from_record(rec, gpus=GpuInfo(count=1, devices=[one]))
    assert hardware_class(base) != hardware_class(with_gpu)


def test_hardware_class_does_not_depend_on_gpu_order():
    rec = record("threadripper-pro-3955wx")
    a, b = GpuDevice(index=0, name="NVIDIA RTX A4500"), GpuDevice(index=1, name="NVIDIA GeForce RTX 3090")
    first = profile_from_record(rec, gpus=GpuInfo(count=2, devices=[a, b]))
    second = profile_from_record(rec, gpus=GpuInfo(count=2, devices=[b, a]))
    assert hardware_class(first) == hardware_class(second)


def test_hardware_class_differs_between_different_cpus():
    classes = {profile_from_record(r).hardware_class for r in CPUS}
    assert len(classes) == len({r["brand"] for r in CPUS})


# ------------------------------------------------------------ override

def test_override_file_is_merged_over_the_probe_and_class_recomputed(tmp_path, monkeypatch, live_profile):
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({
        "cpu": {"brand": "AMD Ryzen Threadripper PRO 3955WX 16-Cores", "uarch": "zen2"},
        "gpus": {"devices": [{"index": 0, "name": "NVIDIA GeForce RTX 3090", "vram_mb": 24576}]},
    }))
    monkeypatch.setenv(override_mod.PROFILE_ENV, str(path))
    profile = probe()
    assert profile.cpu.brand.endswith("3955WX 16-Cores") and profile.cpu.uarch == "zen2"
    assert profile.cpu.threads == live_profile.cpu.threads          # untouched keys kept
    assert profile.gpus.count == 1 and profile.gpus.error is None
    assert profile.hardware_class == hardware_class(profile) != live_profile.hardware_class


def test_override_keeps_hardware_class_when_the_file_sets_it(tmp_path, live_profile):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"hardware_class": "fixedclass01", "hostname": "elsewhere"}))
    profile = apply_profile_override(live_profile, path)
    assert profile.hardware_class == "fixedclass01" and profile.hostname == "elsewhere"


BAD_OVERRIDES = {
    "broken.yaml": ("cpu: {brand: [unclosed\n", "YAML"),
    "broken.json": ('{"cpu": {"brand": }', "JSON"),
    "list.yaml": ("- just\n- a list\n", "mapping"),
    "typo.yaml": ("cpu: {uarh: zen2}\n", "cpu.uarh"),
    "gputypo.yaml": ("gpus: {devices: [{index: 0, name: x, vram: 1}]}\n", "gpus.devices[0].vram"),
    "wrongtype.yaml": ("cpu: {cores: many}\n", "cpu.cores"),
}


@pytest.mark.parametrize("name", sorted(BAD_OVERRIDES))
def test_malformed_override_raises_profile_error_naming_file_and_fault(tmp_path, name, live_profile):
    content, fault = BAD_OVERRIDES[name]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ProfileError) as err:
        apply_profile_override(live_profile, path)
    assert str(path) in str(err.value) and fault in str(err.value)


def test_missing_override_file_raises_profile_error_naming_it(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ProfileError, match=re.escape(str(path))):
        load_profile_override(path)


# ------------------------------------------------------------ output and labels

def test_format_profile_json_round_trips(live_profile):
    assert HardwareProfile.model_validate_json(format_profile(live_profile, "json")) == live_profile


def test_format_profile_yaml_round_trips(live_profile):
    assert HardwareProfile.model_validate(yaml.safe_load(format_profile(live_profile, "yaml"))) == live_profile


def test_format_profile_table_is_two_columns_with_the_key_facts(live_profile):
    table = format_profile(live_profile, "table")
    assert live_profile.cpu.brand in table and live_profile.hardware_class in table
    header = table.splitlines()[0].split()
    assert header == ["fact", "value"]


def test_format_profile_rejects_unknown_format(live_profile):
    with pytest.raises(ValueError, match="xml"):
        format_profile(live_profile, "xml")


def test_labels_only_contain_allowed_characters():
    rec = record("xeon-platinum-8480plus")
    gpu = GpuDevice(index=0, name="NVIDIA GeForce RTX 4090 (24 GB) / ünïcode " + "x" * 80)
    profile = profile_from_record(rec, hostname="--my box!.local--",
                                  gpus=GpuInfo(count=1, devices=[gpu]))
    labels = profile_labels(profile)
    for key, value in labels.items():
        assert LABEL_CHARS.match(key), key
        assert LABEL_CHARS.match(value), value
        assert value[0].isalnum() and value[-1].isalnum(), value
    assert labels["hwm-amx"] == "1" and labels["hwm-uarch"] == "sapphirerapids"
    assert labels["hwm-gpus"] == "1" and labels["hwm-line"] == "xeon"


def test_live_labels_only_contain_allowed_characters(live_profile):
    for key, value in profile_labels(live_profile).items():
        assert LABEL_CHARS.match(key) and LABEL_CHARS.match(value), (key, value)


def test_slugify_label_falls_back_when_nothing_is_left():
    assert slugify_label("!!!") == "none" and slugify_label(None, "unknown") == "unknown"
