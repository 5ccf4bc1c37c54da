package parser_test

import (
	"fmt"

	"gvdb/query/parser"
)

func ExampleParse() {
	s, err := parser.Parse("select nvar(128) as ngv from 'lr-*' where step >= 1000 group by run, window(500)")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Statements[0])

	_, err = parser.Parse("SELECT variance FORM 'mlp'")
	fmt.Println(err)
	// Output:
	// SELECT nvar(128) AS 'ngv' FROM 'lr-*' WHERE step >= 1000 GROUP BY run, window(500)
	// 1:17: unexpected "FORM", expected "FROM" (did you mean FROM?)
}
