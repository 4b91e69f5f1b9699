# -*- Python -*-
# lit configuration for the fwp compiler tests.
import os

import lit.formats

config.name = "fwp"
config.test_format = lit.formats.ShTest(not lit_config.isWindows)
config.suffixes = [".mlir"]
config.excludes = ["Inputs", "lib", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.fwp_obj_root, "test")

# fwp's own tools first, then LLVM's (FileCheck, not, count, split-file).
path = os.path.pathsep.join(
    [config.fwp_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])])
config.environment["PATH"] = path

config.substitutions.append(("%fwp_src_root", config.fwp_src_root))
config.substitutions.append(("%models", os.path.join(config.fwp_src_root, "models")))
config.substitutions.append(("%fwp_plugin", config.fwp_plugin))
config.substitutions.append(("%mlir_opt", os.path.join(config.llvm_tools_dir, "mlir-opt")))

if config.fwp_plugin and os.path.exists(config.fwp_plugin):
    config.available_features.add("plugin")
if config.ptxas and os.path.exists(config.ptxas):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", config.ptxas))
