module github.com/edgefleet/edgefleet

go 1.26.8
