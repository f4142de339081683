// cpp/bindings/decode_bindings.cc — decode-layer entry points used by tests and by the
// decoders' direct `decode(raw, ...)` calls (internal).
#include "bindings/common.h"

namespace rrl_bindings {

void BindDecode(nanobind::module_& /*m*/) {}

}  // namespace rrl_bindings
