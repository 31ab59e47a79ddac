// placeholder: replaced as the module is written.
namespace cutover::pipeline {}
