// Times the C++ capture terms (stan/cpp/capture_cells.hpp) outside Stan: zero terms and non-zero swap
// separately, values only and with gradients. Built and run by bench/native_terms.py.
#include "capture_cells.hpp"

#include <chrono>
#include <fstream>
#include <iostream>
#include <random>

template <typename F>
double ms_per_call(F f, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

int main(int argc, char** argv) {
  std::ifstream in(argv[1]);
  const bool zi = std::atoi(argv[2]);
  int C, G, N;
  in >> C >> G >> N;
  std::vector<int> cell_start(C + 1), nz_gene(N), nz_count(N), cell_dataset(C, 1);
  Eigen::VectorXd total(C);
  for (auto& x : cell_start) in >> x;
  for (auto& x : nz_gene) in >> x;
  for (auto& x : nz_count) in >> x;
  for (int c = 0; c < C; ++c) in >> total[c];
  // parameters near a posterior's scale: capture ~ 2.5% x e^N(0, 0.3), r ~ LogNormal(0, 0.5), gates 1e-4 or U(0.1, 0.5)
  std::mt19937 rng(1);
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Eigen::VectorXd capture(C);
  Eigen::MatrixXd q(G, 1), r(G, 1), lg(G, 1), l1g(G, 1);
  for (int c = 0; c < C; ++c) capture[c] = 0.025 * std::exp(0.3 * z(rng));
  for (int g = 0; g < G; ++g) {
    r(g, 0) = std::exp(0.5 * z(rng));
    q(g, 0) = 20.0 * std::exp(1.5 * z(rng)) / r(g, 0);
    const double pi = u(rng) < 0.9 ? 1e-4 : 0.1 + 0.4 * u(rng);
    lg(g, 0) = std::log(pi);
    l1g(g, 0) = std::log1p(-pi);
  }
  using stan::math::var;
  Eigen::Matrix<var, -1, 1> cv = capture;
  Eigen::Matrix<var, -1, -1> qv = q, rv = r, lgv = lg, l1gv = l1g;
  // each call in a nested autodiff scope: its tape is freed after the gradient, the inputs' are kept
  auto zero = [&] {
    stan::math::nested_rev_autodiff nested;
    var lp = zi ? capture_zinb_zero_terms(cell_dataset, cv, qv, rv, lgv, l1gv, nullptr)
                : capture_nb_zero_terms(cell_dataset, cv, qv, rv, nullptr);
    lp.grad();
  };
  auto nonzero = [&] {
    stan::math::nested_rev_autodiff nested;
    var lp = zi ? capture_zinb_nonzero_terms(1, C, cell_start, nz_gene, nz_count, total, cell_dataset, cv, qv, rv, lgv,
                                             l1gv, nullptr)
                : capture_nb_nonzero_terms(1, C, cell_start, nz_gene, nz_count, total, cell_dataset, cv, qv, rv, nullptr);
    lp.grad();
  };
  std::cout << "{\"zero_terms_ms\": " << ms_per_call(zero, 10) << ", \"nonzero_terms_ms\": " << ms_per_call(nonzero, 5)
            << "}" << std::endl;
}
