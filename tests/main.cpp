#define BOOST_TEST_MODULE ckpt
#include <boost/test/unit_test.hpp>
