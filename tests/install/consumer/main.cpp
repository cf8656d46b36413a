// Uses the installed headers and library: builds "standard" from the factory and runs it.
#include <ringattn/attention/factory.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  ra::AttentionSpec spec;
  spec.attention.segment_lengths = {16, 32};
  spec.attention.dilation_rates = {1, 2};
  auto attention = ra::make_attention("standard", spec);
  auto q = torch::randn({1, 32, 2, 8});
  auto out = attention->forward(q, q, q).out;
  const bool ok = out.sizes() == q.sizes() && torch::isfinite(out).all().item<bool>();
  std::cout << "consumer: " << attention->name() << " out " << out.sizes()
            << (ok ? " ok" : " WRONG") << std::endl;
  return ok ? 0 : 1;
}
